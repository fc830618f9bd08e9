"""Schedules of saved jobs: create, change and delete them; fire the occurrences that are due.

Celery beat sends `schedules_fire_due` every CCS_SCHEDULE_TICK seconds; croniter computes the
occurrences of cron expressions in their time zones. Any number of beat processes may run:
an occurrence is claimed by inserting its unique (schedule, at) row in the transaction that
starts its task, so a second beat that sees it due waits on that row and then skips it."""

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from ccs.errors import InvalidInput, ServiceError

from ..models import JobAudit, JobRun, Occurrence, Schedule
from ..selectors import fire_times, saved_job_visible, schedule_visible
from .saved import audit_write, job_changeable_check, saved_job_run


def zone_check(name: str) -> ZoneInfo:
    if name not in available_timezones():
        raise InvalidInput.field("timezone", f"unknown time zone {name!r} (e.g. Europe/Paris)")
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:  # listed but unreadable: the same answer
        raise InvalidInput.field("timezone", f"unknown time zone {name!r}") from None


def cron_check(cron: str) -> str:
    """A standard cron expression of five fields, as croniter reads it."""
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise InvalidInput.field(
            "cron", f"{cron!r} is not a cron expression of five fields (e.g. '0 3 * * 1-5')")
    return cron


def _next_at(schedule: Schedule, after: datetime) -> datetime | None:
    return next(iter(fire_times(schedule, after, 1)), None)


def _when_checked(cron: str, tz: str, once_at: datetime | None) -> None:
    zone_check(tz)
    if bool(cron) == bool(once_at):
        raise InvalidInput.field("cron", "give a cron expression or a one-off time (once_at), "
                                 "one of them")
    if cron:
        cron_check(cron)
    elif once_at <= timezone.now():
        raise InvalidInput.field("once_at", "a one-off time must be in the future")


def schedule_create(*, actor: AbstractBaseUser, job_id: int, cron: str = "",
                    timezone_name: str = "UTC", once_at: datetime | None = None,
                    paused: bool = False) -> Schedule:
    """Schedule a job; the actor owns the schedule (its runs are the actor's tasks) and must
    be allowed to operate every target of the job now."""
    job = saved_job_visible(actor, job_id)
    _when_checked(cron, timezone_name, once_at)
    job_changeable_check(actor, job)
    schedule = Schedule(job=job, owner=actor, cron=cron, timezone=timezone_name,
                        once_at=once_at, paused=paused)
    schedule.next_at = _next_at(schedule, timezone.now())
    with transaction.atomic():
        schedule.save()
        audit_write(actor, job, JobAudit.Action.SCHEDULE, detail=_described(schedule))
    return schedule


def schedule_edit(*, actor: AbstractBaseUser, schedule_id: int, **changes: object) -> Schedule:
    """Change a schedule's cron, time zone, one-off time or paused flag. Who changes it
    becomes its owner: the runs are theirs from now on, checked against their rights."""
    schedule = schedule_visible(actor, schedule_id)
    job_changeable_check(actor, schedule.job)
    for name, value in changes.items():
        setattr(schedule, "timezone" if name == "timezone_name" else name, value)
    if {"cron", "once_at"} & set(changes):
        schedule.cron = changes.get("cron", "") or ""
        schedule.once_at = changes.get("once_at")
    _when_checked(schedule.cron, schedule.timezone, schedule.once_at)
    schedule.owner = actor
    schedule.next_at = _next_at(schedule, timezone.now())
    with transaction.atomic():
        schedule.save()
        audit_write(actor, schedule.job, JobAudit.Action.SCHEDULE,
                    detail=_described(schedule))
    return schedule


def _described(schedule: Schedule) -> dict:
    """A schedule as its audit row keeps it."""
    return {"schedule": schedule.pk, "cron": schedule.cron, "timezone": schedule.timezone,
            "once_at": schedule.once_at.isoformat() if schedule.once_at else None,
            "paused": schedule.paused, "owner": schedule.owner.get_username()}


def schedule_delete(*, actor: AbstractBaseUser, schedule_id: int) -> None:
    schedule = schedule_visible(actor, schedule_id)
    job_changeable_check(actor, schedule.job)
    with transaction.atomic():
        audit_write(actor, schedule.job, JobAudit.Action.UNSCHEDULE,
                    detail=_described(schedule))
        schedule.delete()


def schedules_fire_due(now: datetime | None = None) -> list[Occurrence]:
    """Fire every occurrence that is due, once each, however many beats call this at once.
    A schedule that was not fired for a while (no beat running) fires its oldest missed
    occurrence once and goes on from now."""
    now = now or timezone.now()
    due = Schedule.objects.filter(paused=False, next_at__lte=now).values_list("pk", flat=True)
    return [occurrence for pk in due if (occurrence := _fire(pk, now)) is not None]


def _fire(schedule_id: int, now: datetime) -> Occurrence | None:
    try:
        with transaction.atomic():
            schedule = Schedule.objects.select_related("job", "owner").filter(
                pk=schedule_id).first()
            if schedule is None or schedule.paused or schedule.next_at is None \
                    or schedule.next_at > now:
                return None  # deleted, paused, or another beat fired it meanwhile
            occurrence = Occurrence.objects.create(schedule=schedule, at=schedule.next_at,
                                                   status=Occurrence.Status.STARTED)
            _run(schedule, occurrence)
            Schedule.objects.filter(pk=schedule.pk, next_at=schedule.next_at).update(
                next_at=_next_at(schedule, now))
            return occurrence
    except IntegrityError:  # the occurrence's row exists: another beat fired it
        return None


def _run(schedule: Schedule, occurrence: Occurrence) -> None:
    """Run the job as the schedule's owner, with the owner's rights now; a refusal is kept
    on the occurrence (visible in the API, the console and the admin) instead of a task."""
    try:
        with transaction.atomic():
            occurrence.task = saved_job_run(actor=schedule.owner, job_id=schedule.job_id,
                                            trigger=JobRun.Trigger.SCHEDULE)
    except ServiceError as exc:
        occurrence.status = Occurrence.Status.FAILED
        occurrence.error = exc.detail[:500]
    occurrence.save(update_fields=["task", "status", "error"])
    if occurrence.status == Occurrence.Status.FAILED:
        from notify.services import schedule_failed_tell  # notify reads jobs: import late

        schedule_failed_tell(occurrence)
