"""Pause, resume and stop of subtasks running on real agents: every process of the job is
really frozen (its cgroup, or its process group in state T), thawed, or killed with nothing
left behind."""

import asyncio
import time

import pytest

from agent.client import ChannelPool
from tasks.hosts.jobs import shard_jobs
from tasks.models import SubTask, Task, TaskEvent
from tests.agent.procs import group_states as _group
from tests.agent.procs import paused_states
from tests.factories import Fleet, free_port, hosts_make, plugin_approved

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
# A child in the background as well, so the whole group must be frozen and killed.
BODY = 'sleep 30 & bg=$!\necho start\nsleep "${CCS_PARAM_SECONDS:-2}"\necho end\nkill $bg\n'


def _until(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return value


def _started(subtask: SubTask) -> int:
    """The job's process group once the plugin has forked both its sleeps (sh + 2)."""
    pgid = _until(lambda: _pgid(subtask), "no pid")
    _until(lambda: len(_group(pgid)) >= 3, "the plugin did not start its children")
    return pgid


def _pgid(subtask: SubTask) -> int:
    job = shard_jobs(subtask.task_id, [subtask.pk])[0]

    async def ask():
        pool = ChannelPool()
        try:
            return await pool.request(job.endpoint, {"op": "status", "job_id": job.job["id"]}, 5)
        finally:
            await pool.close()

    return asyncio.run(ask())["pid"]


@pytest.fixture
def running(api, workers, builtins, tmp_path):
    """A task of two subtasks, both running their plugin on a real agent fleet."""
    plugin_approved("napper", BODY)
    port = free_port()
    fleet = Fleet(tmp_path, hosts_make("dc1", 2, port), port)
    created = api.post("/api/v1/tasks/", {
        "plugin": "napper", "params": {"seconds": 4}, "target": {"nodes": ["corp/test"]},
        "run_as": "root", "control": {"timeout": 6},
    }, format="json").json()
    subtasks = _until(lambda: list(SubTask.objects.filter(
        task_id=created["id"], status="running").order_by("id")) or None, "never ran")
    _until(lambda: len(SubTask.objects.filter(task_id=created["id"], status="running")) == 2,
           "not both running")
    subtasks = list(SubTask.objects.filter(task_id=created["id"]).order_by("id"))
    yield created["id"], subtasks
    fleet.stop()


def test_pause_freezes_the_group_and_resume_finishes_with_full_output(api, running):
    task_id, (first, _) = running
    pgid = _started(first)
    assert api.post(f"/api/v1/subtasks/{first.pk}/pause/").status_code == 202
    _until(lambda: SubTask.objects.get(pk=first.pk).status == "paused", "not paused")
    group = _until(lambda: paused_states(pgid), "not frozen")
    assert len(group) >= 3, group
    time.sleep(6)  # longer than the timeout: paused time does not count
    assert paused_states(pgid) == group
    assert api.post(f"/api/v1/subtasks/{first.pk}/resume/").status_code == 202
    _until(lambda: SubTask.objects.get(pk=first.pk).status in ("success", "failed", "timeout"),
           "did not finish after resume", timeout=40)
    done = SubTask.objects.get(pk=first.pk)
    assert (done.status, done.stdout) == ("success", "start\nend\n"), done.reason
    moves = list(TaskEvent.objects.filter(subtask_id=first.pk).values_list("to_status", flat=True))
    # the agent's confirmation of the resume may arrive after the job's own result (a busy
    # control queue): then paused -> success, a legal move, and no paused -> running
    assert moves in (["queued", "running", "paused", "running", "success"],
                     ["queued", "running", "paused", "success"])
    assert _group(pgid) == {}


def test_stop_kills_the_whole_group_and_keeps_the_output(api, running):
    task_id, (_, second) = running
    pgid = _started(second)
    assert api.post(f"/api/v1/subtasks/{second.pk}/stop/").status_code == 202
    stopped = _until(lambda: SubTask.objects.filter(pk=second.pk, status="stopped").first(),
                     "not stopped")
    assert stopped.stdout == "start\n" and "stopped by operator" in stopped.reason
    _until(lambda: _group(pgid) == {}, "a process of the group survived", timeout=10)


def test_task_pause_freezes_every_host_then_stop_ends_it(api, running):
    task_id, subtasks = running
    pgids = [_started(s) for s in subtasks]
    api.post(f"/api/v1/tasks/{task_id}/pause/")
    _until(lambda: SubTask.objects.filter(task_id=task_id, status="paused").count() == 2,
           "not all paused")
    assert all(_until(lambda p=p: paused_states(p), "not frozen") for p in pgids)
    assert Task.objects.get(pk=task_id).status == "paused"
    stopping = api.post(f"/api/v1/tasks/{task_id}/stop/").json()
    # The hosts have not confirmed yet: the task says so, and has not ended.
    assert (stopping["status"], stopping["finished_at"]) == ("stopping", None)
    assert api.post(f"/api/v1/tasks/{task_id}/resume/").status_code == 409
    _until(lambda: Task.objects.get(pk=task_id).finished_at is not None, "stop never ended")
    assert set(SubTask.objects.filter(task_id=task_id).values_list("status", flat=True)) == {
        "stopped"
    }
    assert Task.objects.get(pk=task_id).status == "stopped"
    _until(lambda: all(_group(p) == {} for p in pgids), "processes survived", timeout=10)
