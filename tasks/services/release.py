"""The controller: release subtasks as datacenter shards within the task's concurrency and
batches, and decide after every change whether the task is finished, paused or wants more."""

import logging
from collections import defaultdict
from datetime import datetime
from itertools import islice

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ccs import routing
from ccs.celery import app as celery_app

from ..control import Progress, batch_limits, failure_limit, release_budget
from ..models import SubTask, Task
from ..selectors import task_counts
from ..states import FAILURES, FINAL, ON_HOST, TASK_FINAL, SubTaskStatus, TaskStatus, task_outcome
from ..transitions import events_record, lock_movable, move_uniform, task_move

log = logging.getLogger(__name__)
RELEASING = (TaskStatus.PENDING, TaskStatus.RUNNING)
NOT_FINAL = sorted(set(SubTaskStatus) - FINAL)


def release_request(task_id: int) -> None:
    """Ask the controller, after commit, to release what the task may release now."""
    transaction.on_commit(
        lambda: celery_app.send_task(routing.TASK_RELEASE, kwargs={"task_id": task_id})
    )


def progress_read(task_id: int) -> Progress:
    counts = task_counts(task_id)
    return Progress(
        total=sum(counts.values()),
        unreleased=counts.get(SubTaskStatus.PENDING, 0) + counts.get(SubTaskStatus.HELD, 0),
        in_flight=sum(counts.get(s, 0) for s in (SubTaskStatus.QUEUED, *ON_HOST)),
        failures=sum(counts.get(s, 0) for s in FAILURES),
    )


def _budget(task: Task, progress: Progress) -> int:
    limits = batch_limits(task.batches, progress.total)
    return release_budget(progress, limits[min(task.batch, len(limits) - 1)], task.concurrency)


def _serialize_releases(task_id: int) -> None:
    # Two controllers must not both count the same free slots. An advisory lock, not the task
    # row: every other writer locks subtask rows before the task row, and so must this one.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [0x0CC5, task_id])


def task_release(*, task_id: int) -> int:
    """Queue what the task may run now and send one message per datacenter shard after
    commit; returns the number of subtasks released."""
    now = timezone.now()
    with transaction.atomic():
        _serialize_releases(task_id)
        task = Task.objects.get(pk=task_id)
        budget = _budget(task, progress_read(task_id)) if task.status in RELEASING else 0
        if budget <= 0:
            return 0
        pending = SubTask.objects.filter(task_id=task_id, status=SubTaskStatus.PENDING)
        ids = list(pending.order_by("id").values_list("id", flat=True)[:budget])
        locked = lock_movable(task_id, SubTaskStatus.QUEUED, ids)
        if Task.objects.select_for_update().get(pk=task_id).status not in RELEASING:
            return 0  # paused or stopped while we counted
        moved = move_uniform(task_id, SubTaskStatus.QUEUED, locked, queued_at=now)
        events_record(task_id, moved, now)
        shards_send_on_commit(task, [m.subtask_id for m in moved])
    return len(moved)


def shards_send_on_commit(task: Task, released: list[int]) -> None:
    """One message per datacenter shard of these queued subtasks, sent after commit."""
    by_dc: dict[str, list[int]] = defaultdict(list)
    rows = SubTask.objects.filter(task_id=task.pk, status=SubTaskStatus.QUEUED)
    wanted = set(released)
    for subtask_id, datacenter in rows.values_list("id", "datacenter__name"):
        if subtask_id in wanted:
            by_dc[datacenter].append(subtask_id)
    shards = [
        {"task_id": task.pk, "datacenter": dc, "priority": task.priority, "subtask_ids": ids}
        for dc, all_ids in sorted(by_dc.items())
        for ids in _chunks(sorted(all_ids), settings.CCS_SHARD_SIZE)
    ]

    def send() -> None:
        for shard in shards:
            celery_app.send_task(routing.TASK_RUN_SHARD, kwargs=shard)

    transaction.on_commit(send)


def _chunks(items: list[int], size: int):
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def task_progress_update(task_id: int, now: datetime) -> None:
    """After subtasks moved: finish the task, pause it at a batch end or on its failure
    threshold, or ask the controller for more. Takes the task row lock; call it last."""
    task = Task.objects.select_for_update().get(pk=task_id)
    if not (task.batches or task.failure_threshold or task.concurrency):
        # Nothing to pause or release: only "is every subtask final?", which an index
        # answers at once, instead of counting the task's subtasks after every batch.
        if not SubTask.objects.filter(task_id=task_id, status__in=NOT_FINAL).exists():
            _finish(task, now)
        return
    progress = progress_read(task_id)
    if progress.done:
        _finish(task, now)
    elif task.status in RELEASING and _threshold_crossed(task, progress):
        _pause(task, f"failure threshold {task.failure_threshold} reached: "
                     f"{progress.failures} of {progress.total} hosts failed")
    elif task.status in RELEASING and _batch_complete(task, progress):
        limits = batch_limits(task.batches, progress.total)
        _pause(task, f"pause point: batch {task.batch + 1} of {len(limits)} done "
                     f"({progress.released} of {progress.total} hosts)", next_batch=True)
        if task.auto_resume and progress.failures == 0:
            _auto_resume_on_commit(task)
    elif task.status in RELEASING and progress.unreleased and _budget(task, progress) > 0:
        release_request(task_id)


def _finish(task: Task, now: datetime) -> None:
    if task.status in TASK_FINAL:
        return  # results that came late, for subtasks that had already ended
    outcome = task_outcome(task_counts(task.pk), stop_asked=task.status == TaskStatus.STOPPING)
    task_move(task.pk, outcome, finished_at=now, paused_reason="")


def _threshold_crossed(task: Task, progress: Progress) -> bool:
    limit = failure_limit(task.failure_threshold, progress.total)
    return limit is not None and progress.failures - task.failures_acknowledged >= limit


def _batch_complete(task: Task, progress: Progress) -> bool:
    if len(task.batches) < 2 or task.batch >= len(task.batches) - 1:
        return False
    limit = batch_limits(task.batches, progress.total)[task.batch]
    return progress.released >= limit and progress.in_flight == 0


def _pause(task: Task, reason: str, next_batch: bool = False) -> None:
    task_move(task.pk, TaskStatus.PAUSED, paused_reason=reason, batch=task.batch + int(next_batch))
    log.info("task %s paused: %s", task.pk, reason)


def _auto_resume_on_commit(task: Task) -> None:
    batch, delay = task.batch + 1, task.auto_resume
    transaction.on_commit(
        lambda: celery_app.send_task(
            routing.TASK_AUTO_RESUME, kwargs={"task_id": task.pk, "batch": batch}, countdown=delay
        )
    )

