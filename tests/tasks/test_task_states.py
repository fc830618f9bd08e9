"""The task state machine: its outcome rule, the one guarded move, and `finished` tasks of
older versions mapped to their outcome."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tasks.models import Task
from tasks.states import (
    TASK_FINAL,
    TASK_LEGAL_PREDECESSORS,
    IllegalTransition,
    TaskStatus,
    task_outcome,
)
from tasks.transitions import task_move, task_move_if
from tests.factories import hosts_make, plugin_approved


@pytest.mark.parametrize(
    ("counts", "stop_asked", "outcome"),
    [
        ({"success": 5}, False, "succeeded"),
        ({"success": 4, "failed": 1}, False, "failed"),
        ({"success": 4, "timeout": 1}, False, "failed"),
        ({"success": 4, "lost": 1}, False, "failed"),
        ({"success": 4, "stopped": 1}, False, "stopped"),
        ({"failed": 1, "stopped": 1}, False, "failed"),
        ({"success": 3, "failed": 1, "stopped": 1}, True, "stopped"),
    ],
)
def test_outcome_from_the_subtasks(counts, stop_asked, outcome):
    assert task_outcome(counts, stop_asked) == outcome


def test_final_states_are_never_left_and_every_state_is_reachable():
    sources = set().union(*TASK_LEGAL_PREDECESSORS.values())
    assert not sources & TASK_FINAL
    assert set(TASK_LEGAL_PREDECESSORS) == set(TaskStatus) - {TaskStatus.PENDING} | {"pending"}
    assert TASK_LEGAL_PREDECESSORS["stopped"] >= {"stopping"}
    assert "stopping" not in TASK_LEGAL_PREDECESSORS["succeeded"]


@pytest.fixture
def task(db) -> Task:
    hosts_make("dc1", 1, port=1)
    return Task.objects.create(
        plugin_version=plugin_approved("noop", "true\n"), run_as="root", timeout=5,
        creator=get_user_model().objects.create_user("someone"), total_hosts=1,
    )


def test_a_legal_move_sets_status_and_values(task):
    task_move(task.pk, "running", started_at=task.created_at)
    task.refresh_from_db()
    assert (task.status, task.started_at) == ("running", task.created_at)


@pytest.mark.parametrize(("current", "target"), [
    ("succeeded", "running"), ("stopped", "paused"), ("failed", "stopping"),
    ("stopping", "paused"), ("stopping", "succeeded"), ("pending", "pending"),
])
def test_an_illegal_move_raises_and_changes_nothing(task, current, target):
    Task.objects.filter(pk=task.pk).update(status=current)
    with pytest.raises(IllegalTransition, match=f"from {current} to {target}"):
        task_move(task.pk, target, paused_reason="nope")
    task.refresh_from_db()
    assert (task.status, task.paused_reason) == (current, "")


def test_a_narrowed_move_only_acts_from_the_given_states(task):
    Task.objects.filter(pk=task.pk).update(status="paused")
    assert not task_move_if(task.pk, "running", only_from=("pending",))
    assert Task.objects.get(pk=task.pk).status == "paused"


@pytest.mark.django_db(transaction=True)
def test_finished_tasks_become_succeeded_failed_or_stopped():
    executor = MigrationExecutor(connection)
    executor.migrate([("tasks", "0005_hot_tables")])
    apps = executor.loader.project_state([("tasks", "0005_hot_tables")]).apps
    hosts = hosts_make("dc1", 2, port=1)
    version = plugin_approved("noop", "true\n")
    user = get_user_model().objects.create_user("someone")
    OldTask, OldSubTask = apps.get_model("tasks", "Task"), apps.get_model("tasks", "SubTask")
    made = {}
    for name, outcomes in {"ok": ("success", "success"), "bad": ("success", "lost"),
                           "cut": ("success", "stopped"), "live": ("running", "pending")}.items():
        old = OldTask.objects.create(
            plugin_version_id=version.pk, run_as="root", timeout=5, creator_id=user.pk,
            status="running" if name == "live" else "finished",
        )
        OldSubTask.objects.bulk_create([
            OldSubTask(task=old, host_id=h.pk, datacenter_id=h.datacenter_id, status=s)
            for h, s in zip(hosts, outcomes, strict=True)
        ])
        made[name] = old.pk
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    statuses = {name: Task.objects.get(pk=pk).status for name, pk in made.items()}
    assert statuses == {"ok": "succeeded", "bad": "failed", "cut": "stopped", "live": "running"}
