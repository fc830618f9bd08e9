"""The grouped summary: 200 hosts, 3 of them failing in different ways."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks.models import SubTask
from tasks.results import HostResult
from tests.factories import hosts_make

pytestmark = pytest.mark.django_db


def _finish(subtask: SubTask, status: str, code: int | None, out: str, reason: str = "") -> None:
    result = HostResult(subtask.pk, status, code, out, "", False, False, reason, timezone.now())
    SubTask.objects.filter(pk=subtask.pk).update(
        status=status, exit_code=code, stdout=out, reason=reason,
        output_hash=result.output_hash(),
    )


def test_summary_groups_identical_outcomes_largest_first(api, builtins):
    hosts_make("dc1", 150, port=1)
    hosts_make("dc2", 50, port=1)
    task = api.post("/api/v1/tasks/", {"plugin": "ping", "params": {}, "run_as": "root",
                                       "target": {"nodes": ["corp/test"]}}, format="json").json()
    subtasks = list(SubTask.objects.filter(task_id=task["id"]).select_related("host")
                    .order_by("host__hostname"))
    for sub in subtasks[3:]:
        _finish(sub, "success", 0, "pong\n")
    _finish(subtasks[0], "failed", 1, "disk full\n")
    _finish(subtasks[1], "failed", 2, "no such file\n")
    _finish(subtasks[2], "failed", None, "", "unreachable: ConnectError")
    with CaptureQueriesContext(connection) as queries:
        from tasks.selectors import task_summary

        task_summary(task["id"])
    assert len(queries) == 1
    summary = api.get(f"/api/v1/tasks/{task['id']}/summary/").json()
    groups = [(g["count"], g["status"], g["exit_code"], g["stdout"] or g["reason"])
              for g in summary["groups"]]
    assert groups[0] == (197, "success", 0, "pong\n")
    assert sorted(groups[1:], key=str) == sorted([
        (1, "failed", 1, "disk full\n"), (1, "failed", 2, "no such file\n"),
        (1, "failed", None, "unreachable: ConnectError"),
    ], key=str)
    assert summary["groups"][0]["hosts"] == [s.host.hostname for s in subtasks[3:13]]
    assert summary["groups"][1]["hosts"] in ([s.host.hostname] for s in subtasks[:3])
    dc2 = api.get(f"/api/v1/tasks/{task['id']}/summary/", {"datacenter": "dc2"}).json()
    assert [(g["count"], g["status"]) for g in dc2["groups"]] == [(50, "success")]
