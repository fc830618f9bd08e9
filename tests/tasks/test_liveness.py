"""Liveness with the default timers: what a killed process held is taken over from the
database (leases, due times) within seconds, never after a broker's redelivery timeout."""

import json
import os
import signal
import time

import pytest
from django.conf import settings

from ccs.stack import wait_for, workers_ready
from tasks.models import CallbackAttempt, Shard, SubTask, Task, TaskEvent
from tests.factories import Fleet, free_port, hosts_make, plugin_approved
from tests.tasks.test_callbacks import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _until(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.2)


def _kill(workers, name: str) -> None:
    """kill -9 of a process of the stack and of everything in its group."""
    proc = workers.procs[name]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _restart(workers, name: str) -> None:
    """What a supervisor does: start it again, and wait until it answers."""
    workers.start(name)
    wait_for(lambda: workers_ready(settings.CELERY_BROKER_URL), f"{name} again", 60)


def test_defaults_take_over_within_seconds():
    """The timers these tests rely on are the shipped ones (nothing shortened for tests)."""
    assert settings.CCS_SHARD_LEASE == 20 and settings.CCS_SITTER_INTERVAL == 5
    assert settings.CCS_SITTER_QUEUED_GRACE == 30
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] == 3600


def test_kill_9_of_a_worker_mid_shard_ends_with_the_agents_outcome(api, workers, builtins,
                                                                    tmp_path):
    """The worker dies with its shard's jobs running; it is not started again (its message
    stays unacknowledged on the broker for an hour). Its lease lapses, the sitter pulls: every
    subtask ends with what the agent reports, each job having run once."""
    runs = tmp_path / "runs"
    plugin_approved("nap-log", f'echo "$CCS_JOB_ID" >> {runs}\nsleep 3\necho "done $CCS_JOB_ID"\n')
    port = free_port()
    fleet = Fleet(tmp_path, hosts_make("dc1", 8, port), port)
    try:
        task_id = api.post("/api/v1/tasks/", {
            "plugin": "nap-log", "params": {}, "target": {"nodes": ["corp/test"]},
            "run_as": "root",
        }, format="json").json()["id"]
        _until(lambda: SubTask.objects.filter(task_id=task_id, status="running").count() == 8,
               "the shard never ran", 60)
        _kill(workers, "worker-dc1")
        killed = time.monotonic()
        _until(lambda: Task.objects.get(pk=task_id).status == "succeeded",
               "the subtasks of the dead worker did not end within 60 s", 60)
        took = time.monotonic() - killed
    finally:
        fleet.stop()
        _restart(workers, "worker-dc1")
    job_ids = runs.read_text().split()
    assert len(job_ids) == 8 and len(set(job_ids)) == 8  # each job ran once, on the agent
    # what was recorded is what each job printed on its host
    assert set(SubTask.objects.filter(task_id=task_id).values_list("status", "stdout")) == {
        ("success", f"done {job_id}\n") for job_id in job_ids
    }
    assert list(TaskEvent.objects.filter(task_id=task_id).order_by("seq")
                .values_list("seq", flat=True)) == list(range(1, 25))
    assert Shard.objects.get(task_id=task_id).state == Shard.State.DONE
    print(f"worker killed mid-shard: every subtask ended {took:.1f} s later")


def test_auto_resume_fires_with_the_controller_dead(api, workers, fleet):
    """The controller is killed while the task waits at a pause point: the sitter resumes it
    when due all the same (the resume is a time in the database, not a delayed message the
    dead controller held); once a controller is back, the rest runs."""
    created = api.post("/api/v1/tasks/", {
        "plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
        "control": {"batches": [1, "100%"], "auto_resume": 3},
    }, format="json").json()
    task_id = created["id"]
    _until(lambda: Task.objects.get(pk=task_id).status == "paused", "no pause point", 60)
    assert Task.objects.get(pk=task_id).resume_at is not None
    _kill(workers, "controller")
    try:
        _until(lambda: Task.objects.get(pk=task_id).status == "running",
               "the auto-resume did not fire without the controller", 3 + 15)
        assert Task.objects.get(pk=task_id).resume_at is None
    finally:
        _restart(workers, "controller")
    _until(lambda: Task.objects.get(pk=task_id).status == "succeeded", "the rest did not run",
           60)
    assert SubTask.objects.filter(task_id=task_id, status="success").count() == 10


def test_killed_callbacks_worker_is_taken_over_within_seconds(api, workers, fleet):
    """kill -9 of the callbacks worker while a receiver holds its POST: its lease lapses
    within seconds and the delivery goes on; every event is delivered, and only the batch in
    flight at the kill may come twice (at least once)."""
    receiver = Receiver(free_port(), hold_first=6)
    try:
        task_id = api.post("/api/v1/tasks/", {
            "plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]},
            "run_as": "root", "callback_url": f"http://127.0.0.1:{receiver.port}/hook",
        }, format="json").json()["id"]
        _until(lambda: receiver.posts, "no callback POST", 60)
        _kill(workers, "callbacks")
        killed = time.monotonic()
        _restart(workers, "callbacks")
        total = lambda: Task.objects.get(pk=task_id).event_seq  # noqa: E731
        _until(lambda: Task.objects.get(pk=task_id).status == "succeeded", "task", 60)
        _until(lambda: {e["seq"] for _, b in receiver.posts for e in json.loads(b)}
               == set(range(1, total() + 1)), "delivery did not resume", 60)
        took = time.monotonic() - killed
    finally:
        receiver.stop()
    batches = [[e["seq"] for e in json.loads(body)] for _, body in receiver.posts]
    first, rest = batches[0], [seq for batch in batches[1:] for seq in batch]
    assert sorted(rest) == sorted(set(rest))  # nothing but the batch in flight came twice
    assert set(rest) | set(first) == set(range(1, total() + 1))
    attempts = CallbackAttempt.objects.filter(task_id=task_id)
    assert all(a.status_code == 204 for a in attempts)
    print(f"callbacks worker killed mid-delivery: all delivered {took:.1f} s later")


def test_a_live_worker_keeps_its_lease_on_a_shard_that_outlasts_it(api, workers, fleet):
    """Jobs that run longer than the lease: the worker renews it while the shard runs, so the
    sitter never takes the shard over (nothing pulled, nothing left)."""
    task_id = api.post("/api/v1/tasks/", {
        "plugin": "sleep", "params": {"seconds": settings.CCS_SHARD_LEASE + 10},
        "target": {"nodes": ["corp/test"]}, "run_as": "root",
    }, format="json").json()["id"]
    _until(lambda: Task.objects.get(pk=task_id).status == "succeeded", "task",
           settings.CCS_SHARD_LEASE + 60)
    shard = Shard.objects.get(task_id=task_id)
    assert (shard.state, shard.pulls, shard.left_at) == (Shard.State.DONE, 0, None)


def test_a_shard_message_lost_with_the_broker_is_sent_again(api, workers, fleet):
    """The shard's message is lost before any worker took it (purged from the broker, as a
    Redis restart without persistence loses it): the sitter sends it again after the queued
    grace, and the task runs."""
    from ccs.celery import app

    _kill(workers, "worker-dc1")
    try:
        task_id = api.post("/api/v1/tasks/", {
            "plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
        }, format="json").json()["id"]
        _until(lambda: Shard.objects.filter(task_id=task_id).exists(), "no shard", 30)
        with app.connection_for_write() as connection:
            _until(lambda: connection.default_channel.queue_purge("dc.dc1"), "no message", 10)
    finally:
        _restart(workers, "worker-dc1")
    _until(lambda: Task.objects.get(pk=task_id).status == "succeeded", "the shard was not sent "
           "again", settings.CCS_SITTER_QUEUED_GRACE + 30)
    shard = Shard.objects.get(task_id=task_id)
    assert (shard.state, shard.sends) == (Shard.State.DONE, 2)
    assert SubTask.objects.filter(task_id=task_id, status="success").count() == 10
