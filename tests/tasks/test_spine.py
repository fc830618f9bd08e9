"""End to end on real services: API → controller → per-datacenter workers → agents → results,
events and the Redis broadcast."""

import json
import threading
import time

import pytest
import redis
from django.conf import settings

from tasks.broadcast import channel_name
from tasks.models import SubTask, Task, TaskEvent
from tasks.states import TASK_FINAL
from tests.factories import Fleet, free_port, hosts_make

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
HOSTS_PER_DC = 25


class Subscriber:
    """Collects every event published on the tasks' channels."""

    def __init__(self) -> None:
        self.pubsub = redis.Redis.from_url(settings.CCS_REDIS_URL).pubsub()
        self.pubsub.psubscribe(channel_name("*"))
        self.pubsub.get_message(timeout=1)  # the subscription confirmation
        self.events: list[dict] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for message in self.pubsub.listen():
            if message["type"] == "pmessage":
                self.events.extend(json.loads(message["data"]))

    def wait_for(self, count: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.events


def _wait_finished(task_id: int, timeout: float = 60) -> Task:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = Task.objects.get(pk=task_id)
        if task.status in TASK_FINAL:
            return task
        time.sleep(0.1)
    pytest.fail(f"task {task_id} not finished: {list(SubTask.objects.values_list('status'))}")


@pytest.fixture
def fleets(tmp_path, builtins):
    running = []
    for dc in ("dc1", "dc2"):
        port = free_port()
        running.append(Fleet(tmp_path, hosts_make(dc, HOSTS_PER_DC, port), port))
    yield running
    for fleet in running:
        fleet.stop()


def test_ping_runs_on_both_datacenters_end_to_end(api, workers, fleets):
    subscriber = Subscriber()
    response = api.post(
        "/api/v1/tasks/",
        {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root"},
        format="json",
    )
    assert response.status_code == 201, response.content
    task = _wait_finished(response.json()["id"])
    assert task.status == "succeeded"

    subtasks = list(SubTask.objects.filter(task=task).select_related("host", "datacenter"))
    assert len(subtasks) == 2 * HOSTS_PER_DC
    for sub in subtasks:
        assert (sub.status, sub.exit_code, sub.stdout) == ("success", 0, "pong\n"), sub.reason
        assert sub.worker.startswith(f"{sub.datacenter.name}@"), (sub.host, sub.worker)

    events = list(TaskEvent.objects.filter(task=task).order_by("seq"))
    assert [e.seq for e in events] == list(range(1, 3 * len(subtasks) + 1))
    for sub in subtasks:
        moves = [(e.from_status, e.to_status) for e in events if e.subtask_id == sub.pk]
        assert moves == [("pending", "queued"), ("queued", "running"), ("running", "success")]

    heard = subscriber.wait_for(len(events))
    assert sorted(e["seq"] for e in heard if e["task"] == task.pk) == [e.seq for e in events]

    detail = api.get(f"/api/v1/tasks/{task.pk}/").json()
    assert detail["counts"] == {"success": len(subtasks)}
    summary = api.get(f"/api/v1/tasks/{task.pk}/summary/").json()
    assert [(g["count"], g["status"], g["stdout"]) for g in summary["groups"]] == [
        (len(subtasks), "success", "pong\n")
    ]


def test_unreachable_hosts_fail_with_reason(api, workers, builtins):
    hosts_make("dc1", 3, port=free_port())  # nothing listens there
    response = api.post(
        "/api/v1/tasks/",
        {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root"},
        format="json",
    )
    task = _wait_finished(response.json()["id"])
    assert task.status == "failed"
    reasons = set(SubTask.objects.filter(task=task).values_list("status", "reason"))
    assert len(reasons) == 1
    status, reason = reasons.pop()
    assert status == "failed" and reason.startswith("unreachable"), reason
