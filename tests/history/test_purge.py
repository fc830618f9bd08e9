"""History retention: old ended tasks go with their subtasks, events and callback records,
after an export to JSON lines; running and recent tasks and every audit row stay."""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from history.services import history_purge
from jobs.models import JobAudit, JobRun, Occurrence
from jobs.services import saved_job_create, schedule_create
from permissions.models import RightsAudit
from plugins.models import Plugin, PluginAudit
from tasks.models import CallbackAttempt, CallbackCursor, SubTask, Task, TaskEvent
from tests.factories import hosts_make, task_made

pytestmark = pytest.mark.django_db
LAUNCH = {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"], "hosts": []},
          "run_as": "root", "control": {}}


def _events(task: Task, count: int) -> None:
    subtask = task.subtasks.first()
    TaskEvent.objects.bulk_create([
        TaskEvent(task=task, seq=seq, subtask=subtask, hostname="h", from_status="running",
                  to_status="success", at=timezone.now()) for seq in range(1, count + 1)])


@pytest.fixture
def history(admin, builtins):
    """An old ended task (with events, callbacks and a saved job's run), an old one still
    running, a recent ended one, and audit rows of rights, plugins and saved jobs."""
    hosts = hosts_make("dc1", 5, port=1)
    RightsAudit.objects.create(actor=admin, action="grant", node_path="corp/test",
                               principal="group:OP", permission="operate_node")
    PluginAudit.objects.create(plugin=Plugin.objects.get(name="ping"), actor=admin,
                               action="approve")
    long_ago = timezone.now() - timedelta(days=40)
    old = task_made(admin, hosts, ["success"] * 4 + ["failed"])
    Task.objects.filter(pk=old.pk).update(finished_at=long_ago)
    _events(old, 7)
    CallbackCursor.objects.create(task=old)
    CallbackAttempt.objects.create(task=old, delivery="00000000-0000-0000-0000-000000000001",
                                   first_seq=1, last_seq=7, duration_ms=3, at=long_ago)
    job = saved_job_create(actor=admin, name="ping-test", launch=LAUNCH)
    JobRun.objects.create(job=job, task=old, version=1)
    schedule = schedule_create(actor=admin, job_id=job.pk, cron="0 3 * * *")
    Occurrence.objects.create(schedule=schedule, at=long_ago, status="started", task=old)
    running = task_made(admin, hosts, ["success", "running", "running", "pending", "pending"])
    Task.objects.filter(pk=running.pk).update(created_at=long_ago, started_at=long_ago)
    _events(running, 3)
    recent = task_made(admin, hosts, ["success"] * 5)
    _events(recent, 5)
    return {"old": old, "running": running, "recent": recent}


def test_purge_deletes_old_ended_tasks_in_batches_and_keeps_the_rest(history, tmp_path):
    audits = (RightsAudit.objects.count(), PluginAudit.objects.count(), JobAudit.objects.count())
    assert min(audits) > 0
    purged = history_purge(days=30, export_dir=str(tmp_path), batch=2)
    assert (purged.tasks, purged.subtasks, purged.events) == (1, 5, 7)
    assert set(Task.objects.values_list("pk", flat=True)) == {
        history["running"].pk, history["recent"].pk}
    assert not SubTask.objects.filter(task_id=history["old"].pk).exists()
    assert TaskEvent.objects.count() == 8 and SubTask.objects.count() == 10
    assert not CallbackCursor.objects.exists() and not CallbackAttempt.objects.exists()
    assert not JobRun.objects.exists()
    assert Occurrence.objects.get().task is None  # the occurrence stays, its task is gone
    assert (RightsAudit.objects.count(), PluginAudit.objects.count(),
            JobAudit.objects.count()) == audits
    lines = {kind: [json.loads(line) for line in
                    (tmp_path / f"ccs-{kind}-{timezone.now():%Y%m%d}.jsonl").open()]
             for kind in ("tasks", "subtasks", "events")}
    assert [t["id"] for t in lines["tasks"]] == [history["old"].pk]
    assert len(lines["subtasks"]) == 5 and len(lines["events"]) == 7
    assert {s["status"] for s in lines["subtasks"]} == {"success", "failed"}
    assert history_purge(days=30, export_dir=str(tmp_path)).tasks == 0


def test_zero_days_keeps_everything(history):
    assert history_purge(days=0).tasks == 0
    assert Task.objects.count() == 3


def test_the_command_says_what_it_deleted(history, capsys):
    call_command("history_purge", "--days", "30")
    assert capsys.readouterr().out.startswith("deleted 1 tasks, 5 subtasks, 7 events")
