"""The sitter: a worker killed mid-shard loses nothing, and no job runs twice."""

import json
import os
import signal
import time

import pytest
from django.conf import settings

from ccs.stack import wait_for, workers_ready
from permissions.models import Host
from tasks.models import SubTask, Task, TaskEvent
from tasks.services import hosts_probe_plan
from tests.factories import Fleet, free_port, hosts_make, plugin_approved
from tests.tasks.test_callbacks import Receiver
from tests.tasks.test_events import _sse_events

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _until(check, what: str, timeout: float = 40, every=None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        if every:
            every()
        time.sleep(0.3)


def test_kill_9_of_a_worker_mid_shard_loses_nothing(api, workers, builtins, tmp_path):
    runs = tmp_path / "runs"
    plugin_approved("nap-count", f'echo "$CCS_JOB_ID" >> {runs}\nsleep 2\necho done\n')
    port = free_port()
    fleet = Fleet(tmp_path, hosts_make("dc1", 6, port), port)
    receiver = Receiver(free_port())
    try:
        created = api.post("/api/v1/tasks/", {
            "plugin": "nap-count", "params": {}, "target": {"nodes": ["corp/test"]},
            "run_as": "root", "control": {"timeout": 3},
            "callback_url": f"http://127.0.0.1:{receiver.port}/hook",
        }, format="json").json()
        task_id = created["id"]
        _until(lambda: SubTask.objects.filter(task_id=task_id, status="running").count() == 6,
               "the shard never ran")
        worker = workers.procs["worker-dc1"]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        workers.start("worker-dc1")
        wait_for(lambda: workers_ready(settings.CELERY_BROKER_URL), "worker-dc1 again", 60)
        _until(lambda: Task.objects.get(pk=task_id).status == "succeeded",
               "the sitter did not finish the task", timeout=60)
    finally:
        fleet.stop()
    outcomes = set(SubTask.objects.filter(task_id=task_id).values_list("status", "stdout"))
    assert outcomes == {("success", "done\n")}
    job_ids = runs.read_text().split()
    assert len(job_ids) == 6 and len(set(job_ids)) == 6  # each job ran exactly once
    seqs = list(TaskEvent.objects.filter(task_id=task_id).order_by("seq")
                .values_list("seq", flat=True))
    assert seqs == list(range(1, 19))
    streamed, ended = _sse_events(api.get(f"/api/v1/tasks/{task_id}/events/",
                                          HTTP_ACCEPT="text/event-stream"))
    assert ended and [e["seq"] for e in streamed] == seqs
    _until(lambda: len({e["seq"] for _, b in receiver.posts for e in json.loads(b)}) == 18,
           "callbacks incomplete")
    delivered = [e["seq"] for _, body in receiver.posts for e in json.loads(body)]
    assert delivered == seqs
    receiver.stop()


def test_probe_marks_hosts_online_and_offline(workers, builtins, tmp_path):
    port = free_port()
    up = hosts_make("dc1", 3, port)
    hosts_make("dc2", 2, free_port())  # nothing listens there
    fleet = Fleet(tmp_path, up, port)
    try:
        assert hosts_probe_plan() == 5
        _until(lambda: Host.objects.filter(status="unknown").count() == 0, "probe did not run")
    finally:
        fleet.stop()
    assert set(Host.objects.filter(status="online").values_list("hostname", flat=True)) == {
        h.hostname for h in up
    }
    assert Host.objects.filter(status="offline").count() == 2
    assert not Host.objects.filter(status="online", last_seen__isnull=True).exists()
