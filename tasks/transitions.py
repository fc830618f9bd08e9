"""Guarded bulk transitions of subtasks, each recorded as an event and announced after commit.

Every writer first locks (or updates) the subtask rows it may move, only those still in a
legal predecessor state, and checks the row count. Only then does it take the task row lock,
by advancing the task's event counter and its per-state counts in one statement, so the lock
is held for the event insert and the commit alone: per-task event numbers are gapless and in
commit order, and the counts read back under that lock ("is every subtask final?") see every
batch committed before it.
"""

import json
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from ccs.db import bulk_update_rows, id_match, insert_rows, sql_value, update_ids

from .broadcast import events_announce
from .control import Progress
from .models import COUNT_FIELDS, SubTask, Task, TaskEvent, count_field
from .states import (
    FAILURES,
    NOT_STARTED,
    ON_HOST,
    IllegalTransition,
    SubTaskStatus,
    TaskStatus,
    predecessors,
    task_predecessors,
)

S = SubTaskStatus


class ConcurrentChange(Exception):
    """Rows changed under a lock we held: a bug, never a user error."""


@dataclass(slots=True)  # not frozen: made three times per host (see tasks/results.py)
class Moved:
    """A subtask that went from one state to another."""

    subtask_id: int
    hostname: str
    from_status: str
    to_status: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Counts:
    """A task's subtasks per state, as its row holds them after a transition."""

    by_state: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def final(self) -> bool:
        """Every subtask has ended."""
        return not any(self.by_state[s] for s in (*NOT_STARTED, *ON_HOST))

    def progress(self) -> Progress:
        n = self.by_state
        return Progress(
            total=self.total,
            unreleased=n[S.PENDING] + n[S.HELD],
            in_flight=n[S.QUEUED] + n[S.RUNNING] + n[S.PAUSED],
            failures=sum(n[s] for s in FAILURES),
        )


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


def lock_by_ids(ids: Sequence[int], states: frozenset[str]) -> list[tuple[int, str]]:
    """(id, status) of these subtasks still in one of `states`, locked, by primary key alone
    (no join, no scan of the task's other rows)."""
    if not ids:
        return []
    match, param = id_match("id", ids)
    marks = ", ".join(["%s"] * len(states))
    lock = " FOR UPDATE" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, status FROM {SubTask._meta.db_table} WHERE {match} "
            f"AND status IN ({marks}) ORDER BY id{lock}",
            [param, *sorted(states)],
        )
        return cursor.fetchall()


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


def move_with_rows(
    locked: list[tuple], rows: dict[int, tuple], data: dict[int, dict] | None = None
) -> list[Moved]:
    """Move locked (id, status, hostname) subtasks each to its own state with its own result
    columns (RESULT_COLUMNS order, status second), in one statement; rows whose move is
    illegal are left alone. `data` is each move's event data."""
    legal = [(sid, host, old) for sid, old, host in locked if old in predecessors(rows[sid][1])]
    allowed_from = sources(rows[sid][1] for sid, _, _ in legal)
    placeholders = ", ".join(["%s"] * len(allowed_from))
    count = bulk_update_rows(
        SubTask._meta.db_table, RESULT_COLUMNS, [rows[sid] for sid, _, _ in legal],
        where=f"t.status IN ({placeholders})", where_params=sorted(allowed_from),
    )
    if count != len(legal):
        raise ConcurrentChange(f"expected {len(legal)} rows, updated {count}")
    data = data or {}
    return [Moved(sid, host, old, rows[sid][1], data.get(sid, {})) for sid, host, old in legal]


def release_to_queue(task_id: int, datacenter_id: int, limit: int, now: datetime) -> list[Moved]:
    """Move up to `limit` pending subtasks of one datacenter to queued, in id order, in one
    statement that also reads their host names. Rows another transaction holds are skipped
    (an operator pausing them right now), so the controller never waits on them."""
    table = SubTask._meta.db_table
    pick = (f"SELECT id FROM {table} WHERE task_id = %s AND datacenter_id = %s "
            f"AND status = %s ORDER BY id LIMIT %s")
    if connection.vendor == "postgresql":
        # ARRAY(...) runs the pick once; `IN (SELECT ... LIMIT)` may be re-run per row and,
        # skipping locked rows, return other ones each time
        picked = f"id = ANY(ARRAY({pick} FOR UPDATE SKIP LOCKED))"
    else:
        picked = f"id IN ({pick})"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, queued_at = %s WHERE status = %s AND {picked} "
            f"RETURNING id, {_HOSTNAME}",
            [S.QUEUED, sql_value(now), S.PENDING, task_id, datacenter_id, S.PENDING, limit],
        )
        rows = sorted(cursor.fetchall())
    return [Moved(sid, hostname, S.PENDING, S.QUEUED) for sid, hostname in rows]


# RETURNING may name only the updated table on SQLite: the host name comes by subquery.
_HOSTNAME = (f"(SELECT hostname FROM permissions_host "
             f"WHERE permissions_host.id = {SubTask._meta.db_table}.host_id)")


def start_on_host(
    ids: Sequence[int], worker: str, shard_id: int, now: datetime, host_fields: Sequence[str]
) -> tuple[list[Moved], list[tuple]]:
    """Move these subtasks from queued to running under this shard (held or stopped ones are
    left alone) and read what their worker needs to reach each host: the moves, and rows of
    (subtask id, *host_fields) with `hostname` first among them."""
    match, param = id_match("id", ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {SubTask._meta.db_table} SET status = %s, started_at = %s, worker = %s, "
            f"shard_id = %s WHERE {match} AND status = %s RETURNING id, host_id",
            [S.RUNNING, sql_value(now), worker, shard_id, param, S.QUEUED],
        )
        started = sorted(cursor.fetchall())
        match, param = id_match("id", [host_id for _, host_id in started])
        cursor.execute(
            f"SELECT id, {', '.join(host_fields)} FROM permissions_host WHERE {match}", [param]
        )
        hosts = {row[0]: row[1:] for row in cursor.fetchall()}
    rows = [(sid, *hosts[host_id]) for sid, host_id in started]
    return [Moved(row[0], row[1], S.QUEUED, S.RUNNING) for row in rows], rows


EVENT_COLUMNS = ("task_id", "seq", "subtask_id", "hostname", "from_status", "to_status", "at",
                 "data")


def events_record(task_id: int, moved: list[Moved], at: datetime | None = None) -> Counts | None:
    """Take the task row lock: advance its event counter and per-state counts; insert one
    event per move with gapless per-task numbers; announce them after commit. Call it after
    the subtask rows are moved. Returns the task's counts after the moves (None: no move)."""
    if not moved:
        return None
    at = at or timezone.now()
    last, callback_url, by_state = _counters_advance(task_id, moved)
    rows, payload = events_rows(task_id, last - len(moved) + 1, moved, at)
    insert_rows(TaskEvent._meta.db_table, EVENT_COLUMNS, rows)
    transaction.on_commit(lambda: events_announce(task_id, payload, bool(callback_url)))
    return Counts(by_state)


def events_rows(
    task_id: int, first: int, moved: list[Moved], at: datetime
) -> tuple[list[tuple], str]:
    """The event rows of these moves numbered from `first`, and their announcement: a JSON
    array of event_payload's shape, written without a dict per event (tested equal)."""
    rows, announced = [], []
    stamp = at.isoformat()
    for seq, m in enumerate(moved, start=first):
        data = json.dumps(m.data) if m.data else "{}"
        rows.append((task_id, seq, m.subtask_id, m.hostname, m.from_status, m.to_status, at,
                     data))
        announced.append(
            f'{{"seq":{seq},"task":{task_id},"subtask":{m.subtask_id},'
            f'"host":{json.dumps(m.hostname)},"from":"{m.from_status}","to":"{m.to_status}",'
            f'"at":"{stamp}","data":{data}}}'
        )
    return rows, f"[{','.join(announced)}]"


def _counters_advance(task_id: int, moved: list[Moved]) -> tuple[int, str, dict[str, int]]:
    delta: Counter[str] = Counter()
    for m in moved:
        delta[m.from_status] -= 1
        delta[m.to_status] += 1
    changes = [(count_field(state), n) for state, n in sorted(delta.items()) if n]
    sets = "".join(f", {name} = {name} + %s" for name, _ in changes)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Task._meta.db_table} SET event_seq = event_seq + %s{sets} WHERE id = %s "
            f"RETURNING event_seq, callback_url, {', '.join(COUNT_FIELDS)}",
            [len(moved), *(n for _, n in changes), task_id],
        )
        last, callback_url, *counts = cursor.fetchone()
    return last, callback_url, dict(zip(SubTaskStatus, counts, strict=True))


def event_payload(task_id: int, seq: int, moved: Moved, at: datetime) -> dict:
    """An event as readers get it (pages, streams, callbacks, announcements)."""
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
    "Counts",
    "Moved",
    "SubTaskStatus",
    "events_record",
    "lock_by_ids",
    "lock_in_states",
    "lock_movable",
    "move_uniform",
    "move_with_rows",
    "release_to_queue",
    "sources",
    "start_on_host",
    "task_mark_started",
    "task_move",
    "task_move_if",
]
