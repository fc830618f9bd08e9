"""The controller's release: exactly the budget, one datacenter shard per transaction and
message, round robin over the datacenters; the per-state counts kept with every move."""

from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from ccs import routing
from tasks.dispatch import Message
from tasks.models import Shard, SubTask, Task, TaskEvent
from tasks.selectors import task_counts
from tasks.services import shard_start, task_release
from tasks.services.release import resend_time
from tasks.services.sitter import releases_ask_again
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


def test_each_shard_is_a_row_that_one_worker_takes(
    api, builtins, django_capture_on_commit_callbacks
):
    hosts_make("dc1", 4, port=1)
    with django_capture_on_commit_callbacks(execute=False):
        task_id = _create(api)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        task_release(task_id=task_id)
    message = next(c.__self__ for c in sent if getattr(c, "__self__", None))
    shard = Shard.objects.get(task_id=task_id)
    assert message.kwargs["shard_id"] == shard.pk
    assert message.kwargs["subtask_ids"] == shard.subtask_ids
    assert shard.state == Shard.State.QUEUED
    kwargs = {"task_id": task_id, "shard_id": shard.pk, "subtask_ids": shard.subtask_ids}
    assert len(shard_start(**kwargs, worker="dc1@a")) == 4
    assert shard_start(**kwargs, worker="dc1@b") == []  # its message came twice
    shard.refresh_from_db()
    assert (shard.state, shard.worker) == (Shard.State.RUNNING, "dc1@a")
    assert shard.lease_until > timezone.now()
    assert set(SubTask.objects.filter(task_id=task_id).values_list("status", "shard_id")) == {
        ("running", shard.pk)}


def test_a_release_asked_for_is_asked_again_until_a_controller_did_it(
    api, builtins, django_capture_on_commit_callbacks
):
    hosts_make("dc1", 2, port=1)
    with django_capture_on_commit_callbacks(execute=False):
        task_id = _create(api)
    assert Task.objects.get(pk=task_id).release_asked_at is not None
    later = timezone.now() + timedelta(seconds=settings.CCS_SITTER_QUEUED_GRACE + 1)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert releases_ask_again(later) == 1  # the message was lost: asked again
    assert [c.__self__.name for c in sent] == [routing.TASK_RELEASE]
    task_release(task_id=task_id)
    assert Task.objects.get(pk=task_id).release_asked_at is None
    assert releases_ask_again(later) == 0


def test_an_untaken_shard_message_is_sent_again_less_and_less_often():
    now, grace = timezone.now(), settings.CCS_SITTER_QUEUED_GRACE
    waits = [(resend_time(now, sends) - now).total_seconds() for sends in range(1, 7)]
    assert waits == [grace, 2 * grace, 4 * grace, 8 * grace, 10 * grace, 10 * grace]


@pytest.mark.django_db(transaction=True)
def test_a_release_does_not_wait_for_a_callback_attempt_being_written(
    api, builtins, django_capture_on_commit_callbacks
):
    # The attempt's foreign key takes KEY SHARE on the task row; a release that locked the row
    # FOR UPDATE waited for it (and deadlocked against the callbacks worker): FOR NO KEY UPDATE
    # does not conflict with KEY SHARE.
    hosts_make("dc1", 3, port=1)
    with django_capture_on_commit_callbacks(execute=False):
        task_id = _create(api)
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"],
                         dbname=db["NAME"]) as other:
        other.execute("SET CONSTRAINTS ALL IMMEDIATE")  # Django's are checked at commit
        other.execute(
            "INSERT INTO tasks_callbackattempt (task_id, delivery, first_seq, last_seq, error, "
            "duration_ms, at) VALUES (%s, gen_random_uuid(), 1, 1, '', 0, now())", [task_id])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        try:
            # (a controller of the suite's workers may have released them first: either way
            # the task row's lock is taken, and must not wait)
            with django_capture_on_commit_callbacks(execute=False):
                task_release(task_id=task_id)
            assert not SubTask.objects.filter(task_id=task_id, status="pending").exists()
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = 0")
        other.rollback()
