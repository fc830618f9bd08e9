"""Celery tasks of saved jobs (names and queues in ccs.routing)."""

import logging

from celery import shared_task

from ccs import routing

from . import services

log = logging.getLogger(__name__)


@shared_task(name=routing.TASK_SCHEDULES_FIRE)
def schedules_fire() -> int:
    """Beat: fire the schedules' due occurrences (once each, whichever beat sent this)."""
    fired = services.schedules_fire_due()
    for occurrence in fired:
        log.info("schedule %s at %s: %s %s", occurrence.schedule_id, occurrence.at,
                 occurrence.status, occurrence.task_id or occurrence.error)
    return len(fired)
