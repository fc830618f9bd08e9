"""Writes of saved jobs and their schedules."""

from .saved import (
    job_changeable_check,
    launch_operable_check,
    saved_job_create,
    saved_job_delete,
    saved_job_edit,
    saved_job_run,
)
from .schedules import (
    schedule_create,
    schedule_delete,
    schedule_edit,
    schedules_fire_due,
)

__all__ = [
    "job_changeable_check",
    "launch_operable_check",
    "saved_job_create",
    "saved_job_delete",
    "saved_job_edit",
    "saved_job_run",
    "schedule_create",
    "schedule_delete",
    "schedule_edit",
    "schedules_fire_due",
]
