"""The event log through the API: JSON pages, and the live stream across a reconnect."""

import json
import time

import pytest

from tasks.models import Task, TaskEvent
from tasks.states import TASK_FINAL
from tests.factories import plugin_approved

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _sse_events(response, stop_after: int | None = None) -> tuple[list[dict], bool]:
    """Parse the stream; stop (as a client dropping the connection would) after N events."""
    events, ended, buffer = [], False, ""
    for chunk in response.streaming_content:
        buffer += chunk.decode()
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(
                line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
                if ": " in line
            )
            if fields.get("event") == "end":
                ended = True
            elif fields.get("event") == "transition":
                event = json.loads(fields["data"])
                assert fields["id"] == str(event["seq"])
                events.append(event)
        if ended or (stop_after is not None and len(events) >= stop_after):
            response.close()
            break
    return events, ended


def test_reconnect_with_last_event_id_gets_every_event_once_in_order(api, workers, fleet):
    plugin_approved("nap", 'sleep 0.3\necho slept\n')
    created = api.post("/api/v1/tasks/", {
        "plugin": "nap", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
        "control": {"concurrency": 2},
    }, format="json").json()
    url = f"/api/v1/tasks/{created['id']}/events/"
    first, ended = _sse_events(api.get(url, HTTP_ACCEPT="text/event-stream"), stop_after=7)
    assert not ended and 7 <= len(first) < 30  # a chunk may carry several events
    assert Task.objects.get(pk=created["id"]).status not in TASK_FINAL  # we left mid-task
    rest, ended = _sse_events(api.get(
        url, HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID=str(first[-1]["seq"])
    ))
    assert ended
    seqs = [e["seq"] for e in first + rest]
    assert seqs == list(range(1, 31))  # 10 hosts x (queued, running, success)
    assert seqs == list(TaskEvent.objects.filter(task_id=created["id"]).order_by("seq")
                        .values_list("seq", flat=True))


def test_json_pages_and_bad_parameters(api, workers, fleet):
    created = api.post("/api/v1/tasks/", {
        "plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
    }, format="json").json()
    deadline = time.monotonic() + 30
    while Task.objects.get(pk=created["id"]).status not in TASK_FINAL:
        assert time.monotonic() < deadline, "the task did not end"
        time.sleep(0.05)
    url = f"/api/v1/tasks/{created['id']}/events/"
    page = api.get(url, {"after": 0, "limit": 12}).json()
    assert [e["seq"] for e in page["results"]] == list(range(1, 13)) and page["more"]
    page = api.get(url, {"after": page["next_after"]}).json()
    assert [e["seq"] for e in page["results"]] == list(range(13, 31)) and not page["more"]
    assert {e["from"] for e in page["results"]} <= {"pending", "queued", "running"}
    for params in ({"after": "x"}, {"after": -1}, {"limit": 0}):
        response = api.get(url, params)
        assert response.status_code == 400 and set(params) <= set(response.json()["errors"])
    bad = api.get(url, HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID="abc")
    assert bad.status_code == 400 and "Last-Event-ID" in json.loads(bad.content)["errors"]
