"""History retention: tasks that ended more than CCS_RETENTION_DAYS ago are deleted with their
subtasks, events and callback records, after an optional export to JSON lines files.

The hot tables (subtasks, events) are purged in statements of at most CCS_RETENTION_BATCH
rows, each its own short transaction: a row lock on rows no running task reads, no table
lock, so a running fan-out never waits on it (bench/retention.py measures it). Audit rows
(plugins, rights, saved jobs) reference no task and are kept; running tasks are never
touched: only ended ones, by the time they ended."""

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from tasks.models import SubTask, Task, TaskEvent
from tasks.states import TASK_FINAL

TASKS_PER_ROUND = 100  # tasks exported and deleted together
LOCK_KEY = 0x63637368  # the advisory lock of the one purge at a time ("ccsh")


@dataclass
class Purged:
    """What one purge deleted (and exported), and its longest single statement."""

    tasks: int = 0
    subtasks: int = 0
    events: int = 0
    longest_statement_ms: float = 0.0
    files: list[str] = field(default_factory=list)


def tasks_expired(days: int, now: datetime) -> list[int]:
    """Ids of ended tasks that ended more than `days` ago, oldest first (one round)."""
    cutoff = now - timedelta(days=days)
    return list(Task.objects.filter(status__in=TASK_FINAL, finished_at__lt=cutoff)
                .order_by("id").values_list("id", flat=True)[:TASKS_PER_ROUND])


def history_purge(*, days: int | None = None, export_dir: str | None = None,
                  batch: int | None = None, now: datetime | None = None) -> Purged:
    """Delete (after exporting, if a directory is set) every task that ended more than `days`
    ago. Days 0: keep everything. Only one purge runs at a time (others return at once)."""
    days = settings.CCS_RETENTION_DAYS if days is None else days
    export_dir = settings.CCS_RETENTION_EXPORT_DIR if export_dir is None else export_dir
    batch = batch or settings.CCS_RETENTION_BATCH
    purged = Purged()
    if days <= 0:
        return purged
    with _exclusive() as mine:
        while mine and (ids := tasks_expired(days, now or timezone.now())):
            if export_dir:
                purged.files = sorted({*purged.files, *_export(ids, Path(export_dir))})
            _purge(ids, batch, purged)
    return purged


@contextlib.contextmanager
def _exclusive() -> Iterator[bool]:
    """Whether this purge holds the lock (PostgreSQL's advisory lock; SQLite has one writer)."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


def _purge(ids: list[int], batch: int, purged: Purged) -> None:
    purged.events += _delete_batched(TaskEvent, ids, batch, purged)
    purged.subtasks += _delete_batched(SubTask, ids, batch, purged)
    with transaction.atomic():  # small tables: callbacks, job runs, occurrences' links
        deleted = Task.objects.filter(pk__in=ids).delete()[1]
    purged.tasks += deleted.get(Task._meta.label, 0)


def _delete_batched(model: type[Model], ids: list[int], batch: int, purged: Purged) -> int:
    """Delete the rows of these tasks, at most `batch` per statement (and transaction)."""
    table = model._meta.db_table
    placeholders = ", ".join(["%s"] * len(ids))
    sql = (f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
           f"WHERE task_id IN ({placeholders}) LIMIT %s)")
    total = 0
    while True:
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [*ids, batch])
            count = cursor.rowcount
        elapsed = time.perf_counter() - started
        purged.longest_statement_ms = max(purged.longest_statement_ms, elapsed * 1000)
        total += count
        if count < batch:
            return total
        # rest in proportion to the work just done: the purge takes at most its share of
        # the database and the cores, whatever the machine's speed or load
        time.sleep(elapsed * settings.CCS_RETENTION_REST)


def _export(ids: list[int], directory: Path) -> list[str]:
    """Append the tasks, their subtasks and their events to JSON lines files, one per kind
    and day, flushed to disk before anything is deleted."""
    directory.mkdir(parents=True, exist_ok=True)
    day = timezone.now().strftime("%Y%m%d")
    kinds = {
        "tasks": Task.objects.filter(pk__in=ids).order_by("id").values(),
        "subtasks": SubTask.objects.filter(task_id__in=ids).order_by("id").values(),
        "events": TaskEvent.objects.filter(task_id__in=ids).order_by("id").values(),
    }
    written = []
    for kind, rows in kinds.items():
        path = directory / f"ccs-{kind}-{day}.jsonl"
        with open(path, "a", encoding="utf-8") as out:
            for row in rows.iterator(chunk_size=5000):
                out.write(json.dumps(row, cls=DjangoJSONEncoder, separators=(",", ":")) + "\n")
            out.flush()
            os.fsync(out.fileno())
        written.append(str(path))
    return written
