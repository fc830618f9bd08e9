"""Celery beat that sends each periodic entry once per period however many beats run side by
side (`celery -A ccs beat -S ccs.beat:OnceScheduler`): a beat sends an entry only if it is the
one that inserted the entry's row for this period; the others find it there. A unique row in
the database, not a clock or a leader, decides."""

import logging
import time
from datetime import timedelta

from celery.beat import PersistentScheduler, ScheduleEntry
from django.db import close_old_connections, connection
from django.utils import timezone

from ccs.db import sql_value

log = logging.getLogger(__name__)
# Rows older than this are deleted as new ones come (they only guard the period they name).
KEEP = timedelta(days=1)


def entry_period(entry: ScheduleEntry) -> float:
    """The entry's period in seconds (a minute for schedules without a fixed period)."""
    run_every = getattr(entry.schedule, "run_every", None)
    return max(run_every.total_seconds(), 1.0) if run_every else 60.0


def firing_claim(entry: str, slot: int) -> bool:
    """Insert the (entry, slot) firing: whether this process inserted it (and so sends it)."""
    from tasks.models import BeatFiring

    table = BeatFiring._meta.db_table
    now = timezone.now()
    close_old_connections()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (entry, slot, at) VALUES (%s, %s, %s) "
            "ON CONFLICT (entry, slot) DO NOTHING", [entry, slot, sql_value(now)])
        claimed = cursor.rowcount == 1
        if claimed:
            cursor.execute(f"DELETE FROM {table} WHERE at < %s", [sql_value(now - KEEP)])
    return claimed


class OnceScheduler(PersistentScheduler):
    """PersistentScheduler whose entries fire once per period across every beat. (Celery's
    Django fixup has set Django up by the time beat runs it.)"""

    def apply_entry(self, entry: ScheduleEntry, producer=None) -> None:
        slot = int(time.time() // entry_period(entry))
        if firing_claim(entry.name, slot):
            super().apply_entry(entry, producer=producer)
        else:
            log.info("Scheduler: %s of period %s sent by another beat", entry.name, slot)
