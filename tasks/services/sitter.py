"""The sitter: acts on what lives in the database and is due, within seconds, whatever a
broker holds: auto-resumes whose time came, shards whose worker's lease lapsed (it pulls their
jobs' real outcome from the agents: the pull half of push + pull), shard messages no worker
took, callback deliveries whose deliverer died. Every pass is a few indexed queries on bounded
batches, and every action is guarded by a row lock, so that two sitters never do it twice.
Also keeps each host's status and last-seen time current (the probe)."""

import logging
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from agent.protocol import DONE, UNKNOWN, BadReply, job_view
from ccs.errors import Conflict
from permissions.models import Host
from plugins.services import revocation_list_resign

from .. import dispatch
from ..hosts.endpoints import endpoint_for
from ..hosts.fanout import FANOUT
from ..hosts.jobs import shard_jobs
from ..hosts.replies import lost, result_from_view
from ..hosts.revocations import pushes_for_older
from ..models import Shard, SubTask, Task
from ..states import ON_HOST, SubTaskStatus, TaskStatus
from ..transitions import events_record, lock_movable, move_uniform
from .callbacks import callbacks_sweep
from .operate import task_resume
from .release import release_request, resend_time, shards_send_on_commit
from .shard import shard_results_save

log = logging.getLogger(__name__)
S = SubTaskStatus
PROBE_CHUNK = 5000
# Rows acted on per kind and pass: a pass stays short whatever piled up (the next takes more).
PASS_BATCH = 200
# Pulls of jobs still running on their hosts: again after 5, 10, 20, 40, then every 60 s.
PULL_AGAIN = (5, 10, 20, 40, 60)


def sitter_run() -> dict[str, int]:
    """One pass: what it did, by kind."""
    now = timezone.now()
    return {
        "resumed": resumes_fire(now),
        "released": releases_ask_again(now),
        "pulled": lapsed_shards_take(now),
        "resent": queued_shards_resend(now),
        "callbacks": callbacks_sweep(),
    }


def resumes_fire(now: datetime) -> int:
    """Resume the tasks whose auto-resume is due. A task another sitter (or an operator)
    resumed or paused again meanwhile is left alone: the resume checks under the row lock."""
    due = Task.objects.filter(status=TaskStatus.PAUSED, resume_at__lte=now)
    fired = 0
    for task_id in due.order_by("resume_at").values_list("id", flat=True)[:PASS_BATCH]:
        try:
            task_resume(actor=None, task_id=task_id, due=now)
        except Conflict:
            continue
        fired += 1
        log.info("task %s: auto-resumed", task_id)
    return fired


def releases_ask_again(now: datetime) -> int:
    """Ask again for the releases a controller was asked for long ago and has not done (its
    message was lost, or the controller died holding it)."""
    cutoff = now - timedelta(seconds=settings.CCS_SITTER_QUEUED_GRACE)
    with transaction.atomic():
        stale = list(Task.objects.select_for_update(skip_locked=True, no_key=True)
                     .filter(release_asked_at__lt=cutoff).order_by("release_asked_at")
                     .values_list("id", flat=True)[:PASS_BATCH])
        for task_id in stale:
            release_request(task_id)
    return len(stale)


def lapsed_shards_take(now: datetime) -> int:
    """Take over the shards whose lease lapsed (their worker died, or left jobs on their
    hosts): hold them for one pull and ask their datacenter's control worker to pull."""
    pull_lease = now + timedelta(seconds=3 * settings.CCS_SITTER_PULL_TIMEOUT)
    with transaction.atomic():
        lapsed = list(
            Shard.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(state__in=(Shard.State.RUNNING, Shard.State.LEFT), lease_until__lt=now)
            .order_by("lease_until").values_list("id", "task_id", "datacenter__name", "state")
            [:PASS_BATCH]
        )
        for shard_id, task_id, datacenter, state in lapsed:
            if state == Shard.State.RUNNING:
                log.warning("shard %s of task %s: its worker's lease lapsed; pulling", shard_id,
                            task_id)
            dispatch.shard_pull(task_id, datacenter, shard_id).on_commit()
        Shard.objects.filter(pk__in=[row[0] for row in lapsed]).update(
            state=Shard.State.LEFT, lease_until=pull_lease,
            left_at=Coalesce("left_at", Value(now)))
    return len(lapsed)


def queued_shards_resend(now: datetime) -> int:
    """Send again the shard messages no worker took by their time (lost with a broker, or
    taken by a worker that died before it started them); starting is guarded, so a shard
    that was only slow to be taken is not run twice."""
    with transaction.atomic():
        stale = list(
            Shard.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(state=Shard.State.QUEUED, resend_at__lte=now).order_by("resend_at")
            .select_related("task", "datacenter")[:PASS_BATCH]
        )
        for shard in stale:
            dispatch.shard_run(shard.task_id, shard.datacenter.name, shard.task.priority,
                               shard.pk, shard.subtask_ids).on_commit()
            Shard.objects.filter(pk=shard.pk).update(
                sends=F("sends") + 1, resend_at=resend_time(now, shard.sends + 1))
    return len(stale)


def shard_pull(*, task_id: int, shard_id: int) -> dict[str, int]:
    """Pull the outcome of the jobs a shard left on their hosts; then, if some still run
    there, hold the shard until the next pull, else close it."""
    shard = Shard.objects.filter(pk=shard_id, state=Shard.State.LEFT).first()
    if shard is None:
        return {}
    counts = subtasks_pull(task_id=task_id, subtask_ids=_on_host(shard),
                           give_up=shard.left_at < timezone.now() - timedelta(
                               seconds=settings.CCS_SITTER_LOST_AFTER))
    if _on_host(shard):
        wait = PULL_AGAIN[min(shard.pulls, len(PULL_AGAIN) - 1)]
        Shard.objects.filter(pk=shard_id, state=Shard.State.LEFT).update(
            pulls=F("pulls") + 1, lease_until=timezone.now() + timedelta(seconds=wait))
    else:
        Shard.objects.filter(pk=shard_id, state=Shard.State.LEFT).update(
            state=Shard.State.DONE, lease_until=None)
    return counts


def _on_host(shard: Shard) -> list[int]:
    """The shard's subtasks that it started and that are still on their hosts."""
    return list(SubTask.objects.filter(id__in=shard.subtask_ids, shard_id=shard.pk,
                                       status__in=ON_HOST).values_list("id", flat=True))


def subtasks_pull(*, task_id: int, subtask_ids: list[int], give_up: bool) -> dict[str, int]:
    """Ask each agent for its job's status by id and record what it says: the result of a
    finished job; a re-dispatch of a job it never received; with `give_up`, `lost` if it
    does not answer. A job still running or paused is left alone. Subtasks (or a task)
    deleted meanwhile are skipped."""
    try:
        jobs = shard_jobs(task_id, subtask_ids)
    except Task.DoesNotExist:
        return {}
    replies = FANOUT.call_all(
        [(job.endpoint, {"op": "status", "job_id": job.job_id}) for job in jobs],
        timeout=settings.CCS_SITTER_PULL_TIMEOUT,
    )
    results, unknown, counts = [], [], defaultdict(int)
    for job, reply in zip(jobs, replies, strict=True):
        state, result = _state(reply)
        counts[state] += 1
        if state == DONE:
            results.append(result_from_view(job.subtask_id, result))
        elif state == UNKNOWN:
            unknown.append(job.subtask_id)
        elif state == "unreachable" and give_up:
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
