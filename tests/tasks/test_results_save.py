"""Saving a batch of results when some subtasks were stopped meanwhile."""

import pytest
from django.utils import timezone

from tasks.models import SubTask, Task, TaskEvent
from tasks.results import HostResult
from tasks.selectors import task_counts
from tasks.services import shard_results_save
from tests.factories import hosts_make

pytestmark = pytest.mark.django_db


def test_results_for_subtasks_no_longer_running_are_dropped_not_fatal(api, builtins):
    hosts_make("dc1", 3, port=1)
    task = api.post("/api/v1/tasks/", {"plugin": "ping", "params": {}, "run_as": "root",
                                       "target": {"nodes": ["corp/test"]}}, format="json").json()
    rows = SubTask.objects.filter(task_id=task["id"]).order_by("id")
    ids = list(rows.values_list("id", flat=True))
    hostnames = dict(rows.values_list("id", "host__hostname"))
    SubTask.objects.filter(id__in=ids[:2]).update(status="running")
    SubTask.objects.filter(id=ids[2]).update(status="stopped")  # an operator was quicker
    Task.objects.filter(pk=task["id"]).update(n_pending=0, n_running=2, n_stopped=1)
    now = timezone.now()
    results = [HostResult(i, "success", 0, "pong\n", "", False, False, "", now) for i in ids]
    saved = shard_results_save(task_id=task["id"], results=results, hostnames=hostnames)
    assert saved == 2
    assert dict(SubTask.objects.filter(task_id=task["id"]).values_list("id", "status")) == {
        ids[0]: "success", ids[1]: "success", ids[2]: "stopped"
    }
    assert TaskEvent.objects.filter(task_id=task["id"], to_status="success").count() == 2
    assert task_counts(task["id"]) == {"success": 2, "stopped": 1}
