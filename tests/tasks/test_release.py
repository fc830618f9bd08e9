"""The controller's release: exactly the budget, one datacenter shard per transaction and
message, round robin over the datacenters; the per-state counts kept with every move."""

import pytest
from django.db.models import Count

from ccs import routing
from tasks.dispatch import Message
from tasks.models import SubTask, Task, TaskEvent
from tasks.selectors import task_counts
from tasks.services import task_release
from tests.factories import hosts_make

pytestmark = pytest.mark.django_db


def _create(api, **control) -> int:
    response = api.post("/api/v1/tasks/", {
        "plugin": "ping", "params": {}, "run_as": "root", "target": {"nodes": ["corp/test"]},
        "control": control,
    }, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _shards(callbacks) -> list[tuple[str, int]]:
    """(datacenter, size) of each shard message the release sends after commit, in order."""
    messages = [c.__self__ for c in callbacks if isinstance(getattr(c, "__self__", None), Message)]
    return [(m.kwargs["datacenter"], len(m.kwargs["subtask_ids"]))
            for m in messages if m.name == routing.TASK_RUN_SHARD]


def _counted(task_id: int) -> dict[str, int]:
    rows = SubTask.objects.filter(task_id=task_id).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def test_release_takes_exactly_the_batch_budget(api, builtins, django_capture_on_commit_callbacks):
    hosts_make("dc1", 10, port=1)
    with django_capture_on_commit_callbacks(execute=False):
        task_id = _create(api, batches=[1, "50%", "100%"])
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert task_release(task_id=task_id) == 1
    assert _shards(sent) == [("dc1", 1)]
    assert task_counts(task_id) == _counted(task_id) == {"pending": 9, "queued": 1}
    # the budget is spent: a second release (two controllers) takes nothing more
    assert task_release(task_id=task_id) == 0


def test_release_sends_one_shard_per_datacenter_in_turn(
    api, builtins, settings, django_capture_on_commit_callbacks
):
    settings.CCS_SHARD_SIZE = 3
    hosts_make("dc1", 7, port=1)
    hosts_make("dc2", 4, port=1)
    with django_capture_on_commit_callbacks(execute=False):
        task_id = _create(api)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert task_release(task_id=task_id) == 11
    assert _shards(sent) == [("dc1", 3), ("dc2", 3), ("dc1", 3), ("dc2", 1), ("dc1", 1)]
    assert task_counts(task_id) == _counted(task_id) == {"queued": 11}
    seqs = list(TaskEvent.objects.filter(task_id=task_id).values_list("seq", flat=True))
    assert sorted(seqs) == list(range(1, 12))
    assert Task.objects.get(pk=task_id).event_seq == 11
