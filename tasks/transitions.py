"""Guarded bulk transitions of subtasks, each recorded as an event and announced after commit.

Every writer takes the task row lock first (so per-task event numbers are gapless and the
"all finished" check sees every committed shard), then locks the subtask rows it may move,
then updates only those still in a legal predecessor state and checks the row count.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from ccs.db import bulk_update_rows, counter_advance

from .broadcast import events_publish
from .models import SubTask, Task, TaskEvent
from .states import FINAL, SubTaskStatus, TaskStatus, predecessors


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


def lock_task(task_id: int) -> Task:
    return Task.objects.select_for_update().get(pk=task_id)


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
    count = SubTask.objects.filter(id__in=ids, status__in=predecessors(target)).update(
        status=target, **values
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
    if count != len(rows):
        raise ConcurrentChange(f"expected {len(legal)} rows, updated {count}")
    return [Moved(sid, host, old, rows[sid][1]) for sid, host, old in legal]


def events_record(task: Task, moved: list[Moved], at: datetime | None = None) -> list[dict]:
    """Insert one event per move with gapless per-task numbers; announce them after commit."""
    if not moved:
        return []
    at = at or timezone.now()
    last = counter_advance(Task._meta.db_table, "event_seq", task.pk, len(moved))
    first = last - len(moved) + 1
    events = [
        TaskEvent(
            task_id=task.pk, seq=first + i, subtask_id=m.subtask_id, hostname=m.hostname,
            from_status=m.from_status, to_status=m.to_status, at=at, data=m.data,
        )
        for i, m in enumerate(moved)
    ]
    TaskEvent.objects.bulk_create(events, batch_size=2000)
    payload = [event_payload(e) for e in events]
    transaction.on_commit(lambda: events_publish(task.pk, payload))
    return payload


def event_payload(event: TaskEvent) -> dict:
    return {
        "seq": event.seq,
        "task": event.task_id,
        "subtask": event.subtask_id,
        "host": event.hostname,
        "from": event.from_status,
        "to": event.to_status,
        "at": event.at.isoformat(),
        "data": event.data,
    }


def task_mark_started(task: Task, at: datetime) -> None:
    Task.objects.filter(pk=task.pk, status=TaskStatus.PENDING).update(
        status=TaskStatus.RUNNING, started_at=at
    )


def task_finish_if_done(task: Task, at: datetime) -> bool:
    """Mark the task finished once no subtask is left in a non-final state."""
    if SubTask.objects.filter(task_id=task.pk).exclude(status__in=FINAL).exists():
        return False
    return bool(
        Task.objects.filter(pk=task.pk)
        .exclude(status=TaskStatus.FINISHED)
        .update(status=TaskStatus.FINISHED, finished_at=at)
    )


__all__ = [
    "SubTaskStatus",
    "Moved",
    "lock_task",
    "lock_movable",
    "lock_in_states",
    "sources",
    "move_uniform",
    "move_with_rows",
    "events_record",
    "task_mark_started",
    "task_finish_if_done",
]
