"""Event streams on the real ASGI web process: replay and follow across a reconnect, events
no announcement brought, keep-alives, and the limit of open streams per user."""

import json
import time
from contextlib import ExitStack

import httpx
import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from tasks.models import SubTask, Task, TaskEvent
from tests.factories import hosts_make, plugin_approved

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def client(web, admin) -> httpx.Client:
    token = Token.objects.create(user=admin).key
    with httpx.Client(base_url=web, headers={"Authorization": f"Token {token}"},
                      timeout=30) as client:
        yield client


@pytest.fixture
def idle_task(admin, builtins) -> Task:
    """A task that never ends by itself (nothing runs it), with one subtask."""
    host = hosts_make("dc1", 1, port=1)[0]
    task = Task.objects.create(plugin_version=plugin_approved("idle", "true\n"), run_as="root",
                               timeout=60, creator=admin, total_hosts=1, n_pending=1)
    SubTask.objects.create(task=task, host=host, datacenter=host.datacenter)
    return task


def _read(stream, until) -> tuple[list[dict], list[str]]:
    """Transition events and other lines read from a stream (a response, or its iter_lines()
    to read on later), until `until(events, lines)` holds."""
    events, lines = [], []
    for line in stream.iter_lines() if isinstance(stream, httpx.Response) else stream:
        if line.startswith("data: {") and '"seq"' in line:
            events.append(json.loads(line[6:]))
        elif line:
            lines.append(line)
        if until(events, lines):
            break
    return events, lines


def test_replay_and_follow_across_a_reconnect_get_every_event_once(client, workers, fleet):
    plugin_approved("nap", "sleep 0.3\necho slept\n")
    created = client.post("/api/v1/tasks/", json={
        "plugin": "nap", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
        "control": {"concurrency": 2},
    }).json()
    url = f"/api/v1/tasks/{created['id']}/events/"
    with client.stream("GET", url, headers=SSE) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        first, _ = _read(response, lambda events, lines: len(events) >= 7)
    with client.stream("GET", url, headers={**SSE, "Last-Event-ID": str(first[-1]["seq"])}) as r:
        rest, lines = _read(r, lambda events, lines: "event: end" in lines)
    seqs = [e["seq"] for e in first + rest]
    assert seqs == list(range(1, 31))  # 10 hosts x (queued, running, success)
    assert seqs == list(TaskEvent.objects.filter(task_id=created["id"]).order_by("seq")
                        .values_list("seq", flat=True))


def test_events_no_announcement_brought_are_read_from_the_table(client, idle_task):
    subtask = idle_task.subtasks.get()
    with client.stream("GET", f"/api/v1/tasks/{idle_task.pk}/events/", headers=SSE) as response:
        stream = response.iter_lines()
        # Written as a lost announcement would leave them: in the table, never published.
        TaskEvent.objects.bulk_create([
            TaskEvent(task=idle_task, seq=seq, subtask=subtask, hostname=subtask.host.hostname,
                      from_status="pending", to_status="held", at=timezone.now())
            for seq in (1, 2)
        ])
        Task.objects.filter(pk=idle_task.pk).update(event_seq=2)
        events, _ = _read(stream, lambda events, lines: len(events) == 2)
        assert [e["seq"] for e in events] == [1, 2]
        Task.objects.filter(pk=idle_task.pk).update(status="succeeded", finished_at=timezone.now())
        _, lines = _read(stream, lambda events, lines: "event: end" in lines)
        assert lines[-1] == "event: end"


def test_an_idle_stream_gets_keep_alives(client, idle_task):
    with client.stream("GET", f"/api/v1/tasks/{idle_task.pk}/events/", headers=SSE) as response:
        _, lines = _read(response, lambda events, lines: ": keep-alive" in lines)
    assert lines[0] == "retry: 2000"


def test_a_user_holds_at_most_five_streams_and_other_requests_still_answer(client, idle_task):
    url = f"/api/v1/tasks/{idle_task.pk}/events/"
    with ExitStack() as open_streams:
        readers = []  # closing a reader would close its stream
        for _ in range(5):
            response = open_streams.enter_context(client.stream("GET", url, headers=SSE))
            assert response.status_code == 200
            readers.append(response.iter_lines())
            assert next(readers[-1]) == "retry: 2000"
        with client.stream("GET", url, headers=SSE) as refused:
            assert refused.status_code == 429
            refused.read()
        assert refused.json()["errors"] == {"user": ["at most 5 open event streams"]}
        assert client.get(f"/api/v1/tasks/{idle_task.pk}/").status_code == 200
    deadline = time.monotonic() + 10
    while _status(client, url) == 429:  # the slots of closed streams are given back
        assert time.monotonic() < deadline, "closed streams kept their slots"
        time.sleep(0.1)


def _status(client: httpx.Client, url: str) -> int:
    with client.stream("GET", url, headers=SSE) as response:
        return response.status_code


def test_without_redis_a_stream_answers_503_with_retry_after_and_json(
    web_on_own_redis, redis_server, admin, idle_task
):
    token = Token.objects.create(user=admin).key
    url = f"{web_on_own_redis}/api/v1/tasks/{idle_task.pk}/events/"
    with httpx.Client(headers={"Authorization": f"Token {token}"}, timeout=30) as client:
        redis_server.stop()
        with client.stream("GET", url, headers=SSE) as refused:
            refused.read()
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json() == {
            "detail": "live events are unavailable for now (Redis cannot be reached); "
                      "retry later, or page them without streaming",
            "errors": {},
        }
        assert client.get(url).status_code == 200  # pages come from the database
        redis_server.start()
        with client.stream("GET", url, headers=SSE) as streamed:
            assert streamed.status_code == 200
            assert next(streamed.iter_lines()) == "retry: 2000"
