"""Pause, resume and stop a task or one subtask, at any moment.

Subtasks that have not reached their host change state here, at once. Those on their host
are changed by the agent: a message on the datacenter's control queue asks it, and the
subtask moves when the agent answers (pause, resume) or when the killed run reports (stop).
"""

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from ccs.errors import Conflict

from .. import dispatch
from ..models import SubTask, Task
from ..states import FINAL, NOT_STARTED, ON_HOST, SubTaskStatus, TaskStatus, task_predecessors
from ..transitions import Moved, events_record, lock_in_states, move_uniform, task_move
from .release import counts_read, release_request, task_progress_update

S = SubTaskStatus
AGENT_OPS = ("pause", "resume", "stop")


def _host_control_on_commit(task_id: int, op: str, rows: list[tuple[int, str]]) -> None:
    """After commit, one control message per datacenter for these (id, datacenter) rows."""
    by_dc: dict[str, list[int]] = defaultdict(list)
    for subtask_id, datacenter in rows:
        by_dc[datacenter].append(subtask_id)
    for datacenter, ids in by_dc.items():
        dispatch.subtasks_control(task_id, datacenter, op, ids).on_commit()


def _on_host(task_id: int, states: frozenset[str]) -> list[tuple[int, str]]:
    rows = SubTask.objects.filter(task_id=task_id, status__in=states)
    return list(rows.values_list("id", "datacenter__name"))


def _move(task_id: int, states: frozenset[str], target: str, actor, ids=None) -> list[Moved]:
    locked = lock_in_states(task_id, states, ids)
    moved = move_uniform(task_id, target, locked)
    who = {"by": actor.get_username()} if actor else {}
    return [Moved(m.subtask_id, m.hostname, m.from_status, m.to_status, who) for m in moved]


def _task_for_update(task_id: int, allowed: Collection[str], action: str) -> Task:
    task = Task.objects.select_for_update(no_key=True).get(pk=task_id)
    if task.status not in allowed:
        raise Conflict(f"cannot {action} a task that is {task.status}", {"status": [task.status]})
    return task


def task_pause(*, actor: AbstractBaseUser, task_id: int) -> Task:
    """Hold what has not started and freeze what runs on its hosts."""
    now = timezone.now()
    with transaction.atomic():
        moved = _move(task_id, frozenset({S.PENDING, S.QUEUED}), S.HELD, actor)
        _task_for_update(task_id, task_predecessors(TaskStatus.PAUSED), "pause")
        events_record(task_id, moved, now)
        # an operator's pause is not ended by the pause point's auto-resume
        task_move(task_id, TaskStatus.PAUSED, paused_reason=f"paused by {actor.get_username()}",
                  resume_at=None)
        _host_control_on_commit(task_id, "pause", _on_host(task_id, frozenset({S.RUNNING})))
    return Task.objects.get(pk=task_id)


def task_resume(*, actor: AbstractBaseUser | None, task_id: int,
                due: datetime | None = None) -> Task:
    """Release held subtasks again, continue frozen ones, and let the controller go on.
    With `due` (the sitter's auto-resume), only resume a task still paused with an
    auto-resume due by then: two sitters, or a resume racing an operator, resume it once."""
    now = timezone.now()
    with transaction.atomic():
        moved = _move(task_id, frozenset({S.HELD}), S.PENDING, actor)
        task = _task_for_update(task_id, (TaskStatus.PAUSED,), "resume")
        if due is not None and (task.resume_at is None or task.resume_at > due):
            raise Conflict(f"task {task_id} has no auto-resume due", {"resume_at": ["not due"]})
        events_record(task_id, moved, now)
        task_move(
            task_id, TaskStatus.RUNNING if task.started_at else TaskStatus.PENDING,
            paused_reason="", resume_at=None,
            failures_acknowledged=counts_read(task_id).progress().failures,
        )
        _host_control_on_commit(task_id, "resume", _on_host(task_id, frozenset({S.PAUSED})))
        release_request(task_id)
    return Task.objects.get(pk=task_id)


def task_stop(*, actor: AbstractBaseUser, task_id: int) -> Task:
    """End what has not started at once; kill what runs on its hosts. The task is `stopping`
    until the last host confirms, then `stopped` (at once if nothing was on a host)."""
    now = timezone.now()
    with transaction.atomic():
        moved = _move(task_id, NOT_STARTED, S.STOPPED, actor)
        _task_for_update(task_id, task_predecessors(TaskStatus.STOPPING), "stop")
        events_record(task_id, moved, now)
        task_move(task_id, TaskStatus.STOPPING, paused_reason="")
        _host_control_on_commit(task_id, "stop", _on_host(task_id, ON_HOST))
        task_progress_update(task_id, now, counts_read(task_id))
    return Task.objects.get(pk=task_id)


def _subtask_change(actor, subtask: SubTask, target: str) -> SubTask:
    now = timezone.now()
    moved = _move(subtask.task_id, frozenset({subtask.status}), target, actor, [subtask.pk])
    counts = events_record(subtask.task_id, moved, now)
    task_progress_update(subtask.task_id, now, counts)
    subtask.status = target
    return subtask


def _subtask_locked(subtask_id: int) -> SubTask:
    return SubTask.objects.select_for_update(of=("self",)).select_related("datacenter").get(
        pk=subtask_id
    )


def _refuse(subtask: SubTask, action: str):
    return Conflict(
        f"cannot {action} a subtask that is {subtask.status}", {"status": [subtask.status]}
    )


def subtask_pause(*, actor: AbstractBaseUser, subtask_id: int) -> SubTask:
    """Hold it if it has not started; freeze it on its host if it runs."""
    with transaction.atomic():
        subtask = _subtask_locked(subtask_id)
        if subtask.status in (S.PENDING, S.QUEUED):
            return _subtask_change(actor, subtask, S.HELD)
        if subtask.status != S.RUNNING:
            raise _refuse(subtask, "pause")
        _host_control_on_commit(subtask.task_id, "pause", [(subtask.pk, subtask.datacenter.name)])
    return subtask


def subtask_resume(*, actor: AbstractBaseUser, subtask_id: int) -> SubTask:
    with transaction.atomic():
        subtask = _subtask_locked(subtask_id)
        if subtask.status == S.HELD:
            release_request(subtask.task_id)
            return _subtask_change(actor, subtask, S.PENDING)
        if subtask.status != S.PAUSED:
            raise _refuse(subtask, "resume")
        _host_control_on_commit(subtask.task_id, "resume", [(subtask.pk, subtask.datacenter.name)])
    return subtask


def subtask_stop(*, actor: AbstractBaseUser, subtask_id: int) -> SubTask:
    with transaction.atomic():
        subtask = _subtask_locked(subtask_id)
        if subtask.status in NOT_STARTED:
            return _subtask_change(actor, subtask, S.STOPPED)
        if subtask.status in FINAL:
            raise _refuse(subtask, "stop")
        _host_control_on_commit(subtask.task_id, "stop", [(subtask.pk, subtask.datacenter.name)])
    return subtask


def host_acks_save(*, task_id: int, op: str, subtask_ids: list[int]) -> int:
    """Record what agents confirmed: a pause (running → paused) or a resume (paused →
    running). A stop is recorded when the killed run reports."""
    target = {"pause": S.PAUSED, "resume": S.RUNNING}.get(op)
    if target is None or not subtask_ids:
        return 0
    now = timezone.now()
    with transaction.atomic():
        source = frozenset({S.RUNNING if op == "pause" else S.PAUSED})
        moved = _move(task_id, source, target, None, subtask_ids)
        events_record(task_id, moved, now)
    return len(moved)
