"""The sitter: finds subtasks whose worker went silent and learns their real outcome from the
agent (the pull half of push + pull); keeps each host's status and last-seen time current."""

import logging
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent.protocol import DONE, UNKNOWN, BadReply, job_view
from permissions.models import Host
from plugins.services import revocation_list_resign

from .. import dispatch
from ..hosts.endpoints import endpoint_for
from ..hosts.fanout import FANOUT
from ..hosts.jobs import shard_jobs
from ..hosts.replies import lost, result_from_view
from ..hosts.revocations import pushes_for_older
from ..models import SubTask, Task
from ..states import ON_HOST, TASK_ACTIVE, SubTaskStatus
from ..transitions import events_record, lock_movable, move_uniform
from .release import shards_send_on_commit
from .shard import shard_results_save

log = logging.getLogger(__name__)
S = SubTaskStatus
PROBE_CHUNK = 5000


def sitter_run() -> dict[str, int]:
    """Ask the datacenter workers to pull the status of every overdue subtask; re-send shards
    that sat queued too long. Returns what it asked for."""
    now = timezone.now()
    overdue: dict[tuple[int, str], list[int]] = defaultdict(list)
    stale = 0
    for task in Task.objects.filter(status__in=TASK_ACTIVE).only("id", "timeout", "priority"):
        cutoff = now - timedelta(seconds=task.timeout + settings.CCS_SITTER_GRACE)
        # Paused ones too: their run's reply may have been given up on (paused time is off
        # the job's clock); pulling only records a job that has ended.
        rows = SubTask.objects.filter(task=task, status__in=ON_HOST, started_at__lt=cutoff)
        for subtask_id, datacenter in rows.values_list("id", "datacenter__name"):
            overdue[(task.pk, datacenter)].append(subtask_id)
        stale += _requeue_stale(task, now)
    for (task_id, datacenter), ids in overdue.items():
        dispatch.subtasks_pull(task_id, datacenter, ids).send()
    return {"overdue": sum(len(ids) for ids in overdue.values()), "requeued": stale}


def _requeue_stale(task: Task, now: datetime) -> int:
    """Shards whose message was lost (queued for too long): send them again. Starting is
    guarded, so a shard that was only slow is not run twice."""
    cutoff = now - timedelta(seconds=settings.CCS_SITTER_QUEUED_GRACE)
    ids = list(SubTask.objects.filter(task=task, status=S.QUEUED, queued_at__lt=cutoff)
               .values_list("id", flat=True))
    if ids:
        with transaction.atomic():
            shards_send_on_commit(task, ids)
    return len(ids)


def subtasks_pull(*, task_id: int, subtask_ids: list[int]) -> dict[str, int]:
    """Ask each agent for its job's status by id and record what it says: the result of a
    finished job; a re-dispatch of a job it never received; `lost` if it stays unreachable.
    A job still running or paused is left alone. Subtasks (or a task) deleted meanwhile are
    skipped."""
    try:
        jobs = shard_jobs(task_id, subtask_ids)
    except Task.DoesNotExist:
        return {}
    replies = FANOUT.call_all(
        [(job.endpoint, {"op": "status", "job_id": job.job_id}) for job in jobs],
        timeout=settings.CCS_SITTER_PULL_TIMEOUT,
    )
    results, unknown, counts = [], [], defaultdict(int)
    lost_after = timezone.now() - timedelta(seconds=settings.CCS_SITTER_LOST_AFTER)
    started = dict(SubTask.objects.filter(id__in=subtask_ids).values_list("id", "started_at"))
    for job, reply in zip(jobs, replies, strict=True):
        state, result = _state(reply)
        counts[state] += 1
        started_at = started.get(job.subtask_id)
        if state == DONE:
            results.append(result_from_view(job.subtask_id, result))
        elif state == UNKNOWN:
            unknown.append(job.subtask_id)
        elif state == "unreachable" and started_at is not None and started_at < lost_after:
            # the reason says what happened, not where: outcomes are grouped by reason
            why = getattr(reply, "reason", None) or type(reply).__name__
            results.append(lost(job.subtask_id, f"agent unreachable: {why}"))
    if results:
        hostnames = {job.subtask_id: job.hostname for job in jobs}
        shard_results_save(task_id=task_id, results=results, hostnames=hostnames)
    if unknown:
        _redispatch(task_id, unknown)
    return dict(counts)


def _state(reply: object) -> tuple[str, dict | None]:
    """The job's state (and result once done) from a `status` reply; "unreachable" when there
    was no reply, "error: ..." for an agent error or a reply of the wrong shape."""
    if isinstance(reply, BaseException):
        return "unreachable", None
    try:
        state, result = job_view(reply)
    except BadReply as exc:
        return f"error: bad reply: {exc}", None
    if "unknown" in state:  # the SSH channel's "unknown job" error: never started there
        return UNKNOWN, None
    return state, result


def _redispatch(task_id: int, subtask_ids: list[int]) -> None:
    """Jobs the agent never received go back on the queue, with events."""
    now = timezone.now()
    with transaction.atomic():
        locked = [r for r in lock_movable(task_id, S.QUEUED, subtask_ids) if r[1] == S.RUNNING]
        moved = move_uniform(task_id, S.QUEUED, locked, queued_at=now)
        events_record(task_id, moved, now)
        shards_send_on_commit(Task.objects.get(pk=task_id), [m.subtask_id for m in moved])
    log.warning("task %s: re-dispatched %d jobs their agents never received", task_id, len(moved))


def hosts_probe_plan() -> int:
    """Ask each datacenter's workers to probe their agent hosts, in chunks (after issuing the
    revocation list again if the signing key was rotated since its newest issue)."""
    revocation_list_resign()
    rows = Host.objects.filter(channel=Host.Channel.AGENT).order_by("id")
    by_dc: dict[str, list[int]] = defaultdict(list)
    for host_id, datacenter in rows.values_list("id", "datacenter__name"):
        by_dc[datacenter].append(host_id)
    for datacenter, ids in by_dc.items():
        for start in range(0, len(ids), PROBE_CHUNK):
            dispatch.hosts_probe(datacenter, ids[start:start + PROBE_CHUNK]).send()
    return sum(len(ids) for ids in by_dc.values())


def hosts_probe(*, host_ids: list[int]) -> dict[str, int]:
    """Health-check each host's agent; mark it online (and seen now) or offline; send the
    revocation list to those that have an older one."""
    hosts = list(Host.objects.filter(id__in=host_ids).values_list(
        "id", "hostname", "address", "port", "key_salt"))
    endpoints = [endpoint_for(name, address, port, salt) for _, name, address, port, salt in hosts]
    timeout = settings.CCS_SITTER_PULL_TIMEOUT
    replies = FANOUT.call_all([(endpoint, {"op": "health"}) for endpoint in endpoints], timeout)
    if pushes := pushes_for_older(endpoints, replies):
        FANOUT.call_all(pushes, timeout)
    online = [
        host[0] for host, reply in zip(hosts, replies, strict=True)
        if isinstance(reply, dict) and reply.get("ok")
    ]
    offline = sorted(set(host_ids) - set(online))
    Host.objects.filter(id__in=online).update(status=Host.Status.ONLINE, last_seen=timezone.now())
    Host.objects.filter(id__in=offline).update(status=Host.Status.OFFLINE)
    return {"online": len(online), "offline": len(offline), "revocations_sent": len(pushes)}
