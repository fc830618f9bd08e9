"""Celery task of history retention (name and queue in ccs.routing)."""

import logging

from celery import shared_task

from ccs import routing

from .services import history_purge

log = logging.getLogger(__name__)


@shared_task(name=routing.TASK_HISTORY_PURGE)
def history_purge_run() -> int:
    """Beat: delete the history older than CCS_RETENTION_DAYS (nothing when it is 0)."""
    purged = history_purge()
    if purged.tasks:
        log.info("history purge: %d tasks, %d subtasks, %d events; longest statement %.0f ms",
                 purged.tasks, purged.subtasks, purged.events, purged.longest_statement_ms)
    return purged.tasks
