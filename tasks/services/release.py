"""The controller: release subtasks as datacenter shards within the task's concurrency and
batches, and decide after every change whether the task is finished, paused or wants more."""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from permissions.models import Datacenter

from .. import dispatch
from ..control import batch_limits, failure_limit, release_budget
from ..models import COUNT_FIELDS, Shard, SubTask, Task
from ..states import TASK_FINAL, SubTaskStatus, TaskStatus, task_outcome
from ..transitions import Counts, events_record, release_to_queue, task_move

log = logging.getLogger(__name__)
RELEASING = (TaskStatus.PENDING, TaskStatus.RUNNING)
# Subtasks queued per transaction after the first (which takes one shard per datacenter).
RELEASE_CHUNK = 10_000
RESEND_BACKOFF_MAX = 10


def release_request(task_id: int) -> None:
    """Ask the controller, after commit, to release what the task may release now; the time
    of asking stays on the task until a controller did it (the sitter asks again if not)."""
    Task.objects.filter(pk=task_id).update(release_asked_at=timezone.now())
    dispatch.task_release(task_id).on_commit()


def counts_read(task: Task | int) -> Counts:
    """The task's subtasks per state, from its row."""
    if isinstance(task, int):
        task = Task.objects.only(*COUNT_FIELDS).get(pk=task)
    return Counts({state: getattr(task, f"n_{state}") for state in SubTaskStatus})


def _budget(task: Task) -> int:
    progress = counts_read(task).progress()
    limits = batch_limits(task.batches, progress.total)
    return release_budget(progress, limits[min(task.batch, len(limits) - 1)], task.concurrency)


def task_release(*, task_id: int) -> int:
    """Queue what the task may run now, in a few transactions: the first takes one shard per
    datacenter (so workers start at once), the next ones up to RELEASE_CHUNK subtasks each,
    spread over the datacenters; every shard (≤ CCS_SHARD_SIZE subtasks of one datacenter)
    is one message, sent when its transaction commits. Returns the number released.

    Each transaction holds the task row first (two controllers never count the same free
    slots) and skips subtask rows others hold, so it never waits on them."""
    released, datacenters, first = 0, None, True
    while True:
        with transaction.atomic():
            task = Task.objects.select_for_update(no_key=True).get(pk=task_id)
            if first and task.release_asked_at is not None:
                Task.objects.filter(pk=task_id).update(release_asked_at=None)
            budget = _budget(task) if task.status in RELEASING else 0
            if budget <= 0:
                return released
            if datacenters is None:
                datacenters = _pending_datacenters(task_id)
            if not datacenters:
                return released
            size = settings.CCS_SHARD_SIZE
            limit = min(budget, size * len(datacenters) if first else RELEASE_CHUNK)
            moved = _release_spread(task, datacenters, limit, size)
            events_record(task_id, moved, timezone.now())
            released += len(moved)
            first = False


def _release_spread(task: Task, datacenters: list[Datacenter], limit: int,
                    size: int) -> list:
    """Up to `limit` subtasks queued, spread evenly over the datacenters; a datacenter with
    nothing more pending leaves the list. One shard message per `size` of each."""
    moved, now = [], timezone.now()
    share = -(-limit // len(datacenters))
    for datacenter in list(datacenters):
        wanted = min(share, limit - len(moved))
        if wanted <= 0:
            break
        taken = release_to_queue(task.pk, datacenter.pk, wanted, now)
        if len(taken) < wanted:
            datacenters.remove(datacenter)  # nothing more pending (or held by an operator)
        for start in range(0, len(taken), size):
            ids = [m.subtask_id for m in taken[start:start + size]]
            shard_send_on_commit(task, datacenter.pk, datacenter.name, ids)
        moved += taken
    return moved


def _pending_datacenters(task_id: int) -> list[Datacenter]:
    ids = (SubTask.objects.filter(task_id=task_id, status=SubTaskStatus.PENDING)
           .values_list("datacenter_id", flat=True).distinct())
    return sorted(Datacenter.objects.filter(pk__in=list(ids)), key=lambda dc: dc.name)


def shard_send_on_commit(task: Task, datacenter_id: int, datacenter: str,
                         subtask_ids: list[int]) -> None:
    """Record this datacenter's shard of queued subtasks (the sitter finds it there if no
    worker takes it, or if the one that took it dies) and, after commit, send its message."""
    if subtask_ids:
        shard = Shard.objects.create(task_id=task.pk, datacenter_id=datacenter_id,
                                     subtask_ids=subtask_ids,
                                     resend_at=resend_time(timezone.now(), 1))
        dispatch.shard_run(task.pk, datacenter, task.priority, shard.pk, subtask_ids).on_commit()


def resend_time(now: datetime, sends: int) -> datetime:
    """When a shard message sent `sends` times is sent again if no worker took it: after the
    queued grace, then twice, four times ... as long, at most RESEND_BACKOFF_MAX times (a
    long queue is not flooded with copies)."""
    factor = min(2 ** (sends - 1), RESEND_BACKOFF_MAX)
    return now + timedelta(seconds=settings.CCS_SITTER_QUEUED_GRACE * factor)


def shards_send_on_commit(task: Task, released: list[int]) -> None:
    """After commit, one message per datacenter shard of these queued subtasks."""
    rows = SubTask.objects.filter(pk__in=released, status=SubTaskStatus.QUEUED)
    by_dc: dict[tuple[int, str], list[int]] = {}
    for subtask_id, *datacenter in rows.values_list(
        "id", "datacenter_id", "datacenter__name"
    ).order_by("id"):
        by_dc.setdefault(tuple(datacenter), []).append(subtask_id)
    size = settings.CCS_SHARD_SIZE
    for (datacenter_id, datacenter), ids in sorted(by_dc.items()):
        for start in range(0, len(ids), size):
            shard_send_on_commit(task, datacenter_id, datacenter, ids[start:start + size])


def task_progress_update(task_id: int, now: datetime, counts: Counts | None) -> None:
    """After subtasks moved (with the task row locked by their events): finish the task,
    pause it at a batch end or on its failure threshold, or ask the controller for more.
    `counts` are the task's counts after the moves; None when nothing moved."""
    if counts is None:
        return
    task = Task.objects.get(pk=task_id)
    if counts.final:
        _finish(task, now, counts)
        return
    if task.status not in RELEASING or not (
        task.batches or task.failure_threshold or task.concurrency
    ):
        return
    progress = counts.progress()
    if _threshold_crossed(task, progress):
        _pause(task, f"failure threshold {task.failure_threshold} reached: "
                     f"{progress.failures} of {progress.total} hosts failed")
    elif _batch_complete(task, progress):
        limits = batch_limits(task.batches, progress.total)
        resume = task.auto_resume if progress.failures == 0 else None
        _pause(task, f"pause point: batch {task.batch + 1} of {len(limits)} done "
                     f"({progress.released} of {progress.total} hosts)", next_batch=True,
               resume_at=now + timedelta(seconds=resume) if resume else None)
    elif progress.unreleased and _budget(task) > 0:
        release_request(task_id)


def _finish(task: Task, now: datetime, counts: Counts) -> None:
    if task.status in TASK_FINAL:
        return  # results that came late, for subtasks that had already ended
    outcome = task_outcome(counts.by_state, stop_asked=task.status == TaskStatus.STOPPING)
    task_move(task.pk, outcome, finished_at=now, paused_reason="")


def _threshold_crossed(task: Task, progress) -> bool:
    limit = failure_limit(task.failure_threshold, progress.total)
    return limit is not None and progress.failures - task.failures_acknowledged >= limit


def _batch_complete(task: Task, progress) -> bool:
    if len(task.batches) < 2 or task.batch >= len(task.batches) - 1:
        return False
    limit = batch_limits(task.batches, progress.total)[task.batch]
    return progress.released >= limit and progress.in_flight == 0


def _pause(task: Task, reason: str, next_batch: bool = False,
           resume_at: datetime | None = None) -> None:
    """Pause the task; with `resume_at`, the sitter resumes it then (auto-resume)."""
    task_move(task.pk, TaskStatus.PAUSED, paused_reason=reason, batch=task.batch + int(next_batch),
              resume_at=resume_at)
    log.info("task %s paused: %s", task.pk, reason)
