"""Guarded bulk transitions of subtasks, each recorded as an event and announced after commit.

Every writer first locks the subtask rows it may move (ordered by id), updates only those
still in a legal predecessor state and checks the row count. Only then does it take the task
row lock, by advancing the task's event counter, so the lock is held for the event insert
and the commit alone: per-task event numbers are gapless and in commit order, and the
"all finished" check, made under that lock, sees every shard committed before it.
"""

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from ccs.db import bulk_update_rows, counter_advance, insert_rows, update_ids

from .broadcast import events_announce
from .models import SubTask, Task, TaskEvent
from .states import IllegalTransition, SubTaskStatus, TaskStatus, predecessors, task_predecessors


class ConcurrentChange(Exception):
    """Rows changed under a lock we held: a bug, never a user error."""


@dataclass(frozen=True)
class Moved:
    """A subtask that went from one state to another."""

    subtask_id: int
    hostname: str
    from_status: str
    to_status: str
    data: dict[str, Any] = field(default_factory=dict)


def sources(targets: Iterable[str]) -> frozenset[str]:
    """Every state from which one of `targets` may be entered."""
    return frozenset().union(*(predecessors(t) for t in targets))


def lock_movable(task_id: int, target: str, ids: Iterable[int] | None = None) -> list[tuple]:
    """(id, status, hostname) of the task's subtasks that may move to `target`, locked."""
    return lock_in_states(task_id, predecessors(target), ids)


def lock_in_states(task_id: int, states: frozenset[str], ids: Iterable[int] | None) -> list[tuple]:
    rows = SubTask.objects.select_for_update(of=("self",)).filter(
        task_id=task_id, status__in=states
    )
    if ids is not None:
        rows = rows.filter(id__in=list(ids))
    return list(rows.order_by("id").values_list("id", "status", "host__hostname"))


def move_uniform(task_id: int, target: str, locked: list[tuple], **values: Any) -> list[Moved]:
    """Move locked rows to `target`, setting the same extra column values on each."""
    ids = [row[0] for row in locked]
    count = update_ids(
        SubTask._meta.db_table, ids, {"status": target, **values}, sorted(predecessors(target))
    )
    if count != len(ids):
        raise ConcurrentChange(f"expected {len(ids)} rows, moved {count}")
    return [Moved(sid, host, old, target) for sid, old, host in locked]


RESULT_COLUMNS: Sequence[tuple[str, str]] = (
    ("id", "bigint"),
    ("status", "text"),
    ("exit_code", "integer"),
    ("stdout", "text"),
    ("stderr", "text"),
    ("stdout_truncated", "boolean"),
    ("stderr_truncated", "boolean"),
    ("output_hash", "text"),
    ("reason", "text"),
    ("finished_at", "timestamptz"),
)


def move_with_rows(locked: list[tuple], rows: dict[int, tuple]) -> list[Moved]:
    """Move locked subtasks each to its own state with its own result columns (RESULT_COLUMNS
    order, status second), in one statement; rows whose move is illegal are left alone."""
    legal = [(sid, host, old) for sid, old, host in locked if old in predecessors(rows[sid][1])]
    allowed_from = sources(rows[sid][1] for sid, _, _ in legal)
    placeholders = ", ".join(["%s"] * len(allowed_from))
    count = bulk_update_rows(
        SubTask._meta.db_table, RESULT_COLUMNS, [rows[sid] for sid, _, _ in legal],
        where=f"t.status IN ({placeholders})", where_params=sorted(allowed_from),
    )
    if count != len(legal):
        raise ConcurrentChange(f"expected {len(legal)} rows, updated {count}")
    return [Moved(sid, host, old, rows[sid][1]) for sid, host, old in legal]


EVENT_COLUMNS = ("task_id", "seq", "subtask_id", "hostname", "from_status", "to_status", "at",
                 "data")


def events_record(task_id: int, moved: list[Moved], at: datetime | None = None) -> list[dict]:
    """Take the task row lock, insert one event per move with gapless per-task numbers, and
    announce them after commit. Call it after the subtask rows are moved."""
    if not moved:
        return []
    at = at or timezone.now()
    last, callback_url = counter_advance(
        Task._meta.db_table, "event_seq", task_id, len(moved), also=("callback_url",)
    )
    first = last - len(moved) + 1
    rows = [
        (task_id, first + i, m.subtask_id, m.hostname, m.from_status, m.to_status, at,
         json.dumps(m.data))
        for i, m in enumerate(moved)
    ]
    insert_rows(TaskEvent._meta.db_table, EVENT_COLUMNS, rows)
    payload = [event_payload(task_id, row[1], m, at) for row, m in zip(rows, moved, strict=True)]
    transaction.on_commit(lambda: events_announce(task_id, payload, bool(callback_url)))
    return payload


def event_payload(task_id: int, seq: int, moved: Moved, at: datetime) -> dict:
    return {
        "seq": seq,
        "task": task_id,
        "subtask": moved.subtask_id,
        "host": moved.hostname,
        "from": moved.from_status,
        "to": moved.to_status,
        "at": at.isoformat(),
        "data": moved.data,
    }


def task_move_if(
    task_id: int, target: str, *, only_from: Collection[str] | None = None, **values: Any
) -> bool:
    """The one guarded move of a task's status: `UPDATE … WHERE status IN (legal predecessors
    of target, narrowed to only_from)`, setting `values` too; returns whether it moved."""
    allowed = task_predecessors(target)
    if only_from is not None:
        allowed = allowed & frozenset(only_from)
    return bool(Task.objects.filter(pk=task_id, status__in=allowed).update(status=target, **values))


def task_move(task_id: int, target: str, **values: Any) -> None:
    """Move the task to `target`; raises IllegalTransition if its state does not allow it."""
    if not task_move_if(task_id, target, **values):
        current = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
        raise IllegalTransition(current or "missing", target)


def task_mark_started(task_id: int, at: datetime) -> None:
    task_move_if(task_id, TaskStatus.RUNNING, only_from=(TaskStatus.PENDING,), started_at=at)


__all__ = [
    "SubTaskStatus",
    "Moved",
    "lock_movable",
    "lock_in_states",
    "sources",
    "move_uniform",
    "move_with_rows",
    "events_record",
    "task_mark_started",
    "task_move",
    "task_move_if",
]
