"""Reads of saved jobs, resolving who may see them from the tree rights."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from ccs.errors import NotFound
from permissions.selectors import VIEW, granted_paths, hosts_with_perm

from .models import JobRun, SavedJob


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
