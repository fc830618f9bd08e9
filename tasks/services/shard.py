"""The datacenter worker's side: start a shard, fan it out, save results as they arrive."""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..hosts.fanout import FANOUT, Heartbeat
from ..hosts.jobs import HOST_COLUMNS, HostJob, host_jobs, shard_jobs
from ..models import Shard, Task
from ..results import HostResult
from ..transitions import (
    events_record,
    lock_by_ids,
    move_with_rows,
    sources,
    start_on_host,
    task_mark_started,
)
from .operate import host_acks_save
from .release import task_progress_update

log = logging.getLogger(__name__)
CONTROL_TIMEOUT = 10.0
# The agent's job state that confirms each request.
CONFIRMS = {"pause": "paused", "resume": "running", "stop": "stopping"}


def shard_start(*, task_id: int, shard_id: int, subtask_ids: list[int],
                worker: str) -> list[HostJob]:
    """Take the shard (with a lease) and mark its still-queued subtasks running (held or
    stopped ones are skipped); returns the jobs this worker now owns, ready to send. A shard
    another worker took, or the sitter took over, starts nothing: its message came twice."""
    now = timezone.now()
    with transaction.atomic():
        if not shard_claim(shard_id, worker, now):
            return []
        moved, rows = start_on_host(subtask_ids, worker, shard_id, now, HOST_COLUMNS)
        events_record(task_id, moved, now)
        if moved:
            task_mark_started(task_id, now)
        else:
            shard_end(shard_id, worker, left=0)
    if not rows:
        return []
    task = Task.objects.select_related("plugin_version__plugin").get(pk=task_id)
    return host_jobs(task, rows)


def _lease_end(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.CCS_SHARD_LEASE)


def shard_claim(shard_id: int, worker: str, now: datetime) -> bool:
    """Take a queued shard, with a lease: whether this worker got it."""
    return bool(Shard.objects.filter(pk=shard_id, state=Shard.State.QUEUED).update(
        state=Shard.State.RUNNING, worker=worker, lease_until=_lease_end(now)))


def shard_renew(shard_id: int, worker: str) -> bool:
    """Extend this worker's lease on a shard it runs (one row, however many hosts): whether
    it still holds it."""
    held = bool(Shard.objects.filter(
        pk=shard_id, state=Shard.State.RUNNING, worker=worker,
    ).update(lease_until=_lease_end(timezone.now())))
    if not held:
        log.warning("shard %s: lease lost (renewed too late): the sitter pulls its jobs; a "
                    "result from here is still recorded if it comes first", shard_id)
    return held


def shard_end(shard_id: int, worker: str, left: int) -> None:
    """The worker is done with its shard: done, or, with subtasks left on their hosts (no
    reply by their deadline), handed to the sitter at once (its lease lapses now)."""
    now = timezone.now()
    ended = {"state": Shard.State.DONE, "lease_until": None} if not left else {
        "state": Shard.State.LEFT, "lease_until": now, "left_at": now}
    Shard.objects.filter(pk=shard_id, state=Shard.State.RUNNING, worker=worker).update(**ended)


def shard_results_save(
    *, task_id: int, results: list[HostResult], hostnames: dict[int, str]
) -> int:
    """Persist a batch of host results in one statement, with their events; returns rows
    moved. `hostnames` names each subtask's host (for its event)."""
    by_id = {r.subtask_id: r for r in results}
    now = timezone.now()
    with transaction.atomic():
        locked = lock_by_ids(list(by_id), sources(r.status for r in results))
        locked = [(sid, status, hostnames[sid]) for sid, status in locked]
        moved = move_with_rows(locked, {sid: r.row() for sid, r in by_id.items()},
                               {sid: r.event_data() for sid, r in by_id.items()})
        counts = events_record(task_id, moved, now)
        task_progress_update(task_id, now, counts)
    if len(moved) != len(results):
        log.warning("task %s: %d results arrived for subtasks no longer on their host",
                    task_id, len(results) - len(moved))
    return len(moved)


def shard_run(*, task_id: int, shard_id: int, subtask_ids: list[int], worker: str) -> int:
    """Start the shard's queued subtasks, fan them out, and save results as they arrive,
    renewing the shard's lease meanwhile."""
    jobs = shard_start(task_id=task_id, shard_id=shard_id, subtask_ids=subtask_ids,
                       worker=worker)
    if not jobs:
        return 0
    hostnames = {job.subtask_id: job.hostname for job in jobs}
    left = FANOUT.run(
        jobs, lambda batch: shard_results_save(task_id=task_id, results=batch, hostnames=hostnames),
        Heartbeat(lambda: shard_renew(shard_id, worker), settings.CCS_SHARD_LEASE / 4),
    )
    shard_end(shard_id, worker, left)
    return len(jobs)


def host_control_run(*, task_id: int, op: str, subtask_ids: list[int]) -> dict[int, str]:
    """Ask the agents of these subtasks to pause, resume or stop their job; record the
    confirmed pauses and resumes. Returns each subtask's answer, for the log."""
    jobs = shard_jobs(task_id, subtask_ids)
    requests = [(job.endpoint, {"op": op, "job_id": job.job_id}) for job in jobs]
    replies = FANOUT.call_all(requests, timeout=CONTROL_TIMEOUT)
    answers = {job.subtask_id: _answer(reply) for job, reply in zip(jobs, replies, strict=True)}
    confirmed = [sid for sid, state in answers.items() if state == CONFIRMS.get(op)]
    host_acks_save(task_id=task_id, op=op, subtask_ids=confirmed)
    return answers


def _answer(reply: object) -> str:
    if isinstance(reply, BaseException):
        return f"unreachable: {type(reply).__name__} {getattr(reply, 'reason', reply)}"
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else "not an object"
        return f"error: {error}"
    return str(reply.get("state"))
