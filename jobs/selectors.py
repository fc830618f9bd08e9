"""Reads of saved jobs, resolving who may see them from the tree rights."""

from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from ccs.errors import NotFound
from permissions.selectors import VIEW, granted_paths, hosts_with_perm

from .models import JobRun, Occurrence, SavedJob, Schedule


def _covered(path: str, granted: list[str]) -> bool:
    return any(path == g or path.startswith(g + "/") for g in granted)


def saved_jobs_visible_to(user: AbstractBaseUser) -> QuerySet[SavedJob]:
    """Jobs the user owns, and jobs whose every target node and host the user can see (the
    same rule as tasks). Three queries however many jobs: the grants, the jobs' targets and
    the named hosts the user sees; jobs are few next to hosts."""
    jobs = SavedJob.objects.select_related("owner")
    if user.is_superuser:
        return jobs
    granted = granted_paths(user, VIEW)
    targets = list(jobs.values_list("pk", "owner_id", "launch"))
    named = {h for _, _, launch in targets for h in launch["target"]["hosts"]}
    seen = set(hosts_with_perm(user, VIEW).filter(hostname__in=named)
               .values_list("hostname", flat=True))
    visible = [pk for pk, owner, launch in targets if owner == user.pk or (
        all(_covered(p, granted) for p in launch["target"]["nodes"])
        and set(launch["target"]["hosts"]) <= seen)]
    return jobs.filter(pk__in=visible)


def saved_job_visible(user: AbstractBaseUser, job_id: int) -> SavedJob:
    """The job if the user may see it; 404 otherwise (never reveal what is out of scope)."""
    job = saved_jobs_visible_to(user).filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"no saved job {job_id}")
    return job


def saved_job_runs(job: SavedJob) -> QuerySet[JobRun]:
    """The job's runs, newest first, with their tasks."""
    return job.runs.select_related("task__creator", "task__plugin_version__plugin")


def schedule_visible(user: AbstractBaseUser, schedule_id: int) -> Schedule:
    """The schedule if the user sees its job; 404 otherwise."""
    schedule = Schedule.objects.select_related("job", "owner").filter(pk=schedule_id).first()
    if schedule is None:
        raise NotFound(f"no schedule {schedule_id}")
    saved_job_visible(user, schedule.job_id)
    return schedule


def schedule_occurrences(schedule: Schedule) -> QuerySet[Occurrence]:
    """The schedule's occurrences, newest first: the task each started, or why it did not."""
    return schedule.occurrences.select_related("task")


def fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The schedule's next `count` occurrences after `after`, in its time zone (one at most
    for a one-off)."""
    if not schedule.cron:
        return [schedule.once_at] if schedule.once_at and schedule.once_at > after else []
    times = croniter(schedule.cron, after.astimezone(ZoneInfo(schedule.timezone)))
    return [times.get_next(datetime) for _ in range(count)]


def upcoming(schedule: Schedule, count: int = 5) -> list[datetime]:
    """The schedule's next fire times, from the next occurrence on."""
    if schedule.next_at is None:
        return []
    first = schedule.next_at.astimezone(ZoneInfo(schedule.timezone))
    return [first, *fire_times(schedule, first, count - 1)]
