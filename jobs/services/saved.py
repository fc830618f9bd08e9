"""Writes of saved jobs: create, edit, delete and run them, each audited in its transaction.

A job's launch is checked as a launch is (tasks.services.plan runs the create path's own
checks) when it is saved; running it is an ordinary task_create as the one who runs it, so
rights, approval and quota are checked at run time, not at save time."""

import re

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from ccs.errors import Conflict, Forbidden, InvalidInput, ServiceError
from permissions.selectors import OPERATE, nodes_with_perm
from tasks.models import Task
from tasks.services import launch_arguments, task_create
from tasks.services.plan import task_plan

from ..models import JobAudit, JobRun, SavedJob
from ..selectors import saved_job_visible

Action = JobAudit.Action
NAME = re.compile(r"[-a-zA-Z0-9_]{1,100}")


def audit_write(actor: AbstractBaseUser | None, job: SavedJob, action: str,
                task: Task | None = None, detail: dict | None = None) -> None:
    """The audit row of a change to a job (in the change's transaction)."""
    JobAudit.objects.create(job=job, job_name=job.name, actor=actor, action=action,
                            launch=job.launch, task=task.pk if task else None,
                            detail=detail or {})


def launch_operable_check(actor: AbstractBaseUser, launch: dict) -> None:
    """Who may save (or change, or delete) a job on this launch: one who may operate every
    target node and host now. The launch is checked as a launch would be (400 naming the
    field) and what the actor may not operate is refused (403), naming it."""
    nodes = sorted(set(launch["target"]["nodes"]))
    operable = set(nodes_with_perm(actor, OPERATE).filter(path__in=nodes)
                   .values_list("path", flat=True))
    try:  # 400 for bad input and what the actor cannot see
        plan = task_plan(actor=actor, **launch_arguments(launch))
    except ServiceError as exc:
        errors = {f"launch.{name}": messages for name, messages in exc.errors.items()}
        raise type(exc)(exc.detail, errors) from None
    if missing := [path for path in nodes if path not in operable]:
        raise Forbidden(f"you may not operate node {missing[0]}",
                        {"launch.target.nodes": [f"not operable: {p}" for p in missing[:20]]})
    if plan.not_operable["count"]:
        names = plan.not_operable["hosts"]
        raise Forbidden(f"you may not operate {plan.not_operable['count']} of the target hosts",
                        {"launch.target": [f"not operable: {name}" for name in names]})


def job_changeable_check(actor: AbstractBaseUser, job: SavedJob) -> None:
    """Who may change, schedule or delete a job: one who may operate its target now. When
    its launch no longer holds (a node removed, params the newest version refuses), its
    owner (or a superuser) still may, to fix or delete it; anyone else gets 409."""
    try:
        launch_operable_check(actor, job.launch)
    except InvalidInput as exc:
        if actor.is_superuser or actor.pk == job.owner_id:
            return
        raise Conflict(f"the job's launch no longer holds: {exc.detail}", exc.errors) from None


def _named(name: str, job: SavedJob | None = None) -> None:
    """A name that a job may take: a slug nobody else's job has."""
    if not NAME.fullmatch(name):
        raise InvalidInput.field("name", "give the job a name of letters, digits, - and _ "
                                 "(at most 100)")
    others = SavedJob.objects.filter(name=name).exclude(pk=job.pk if job else None)
    if others.exists():
        raise InvalidInput.field("name", f"a saved job named {name} exists")


def _saved(job: SavedJob) -> SavedJob:
    """Save, answering a name taken meanwhile (two requests at once) as the check does."""
    try:
        with transaction.atomic():
            job.save()
    except IntegrityError:
        raise InvalidInput.field("name", f"a saved job named {job.name} exists") from None
    return job


def saved_job_create(*, actor: AbstractBaseUser, name: str, launch: dict,
                     description: str = "") -> SavedJob:
    """Save a launch under a name; the actor owns it."""
    launch_operable_check(actor, launch)
    _named(name)
    with transaction.atomic():
        job = _saved(SavedJob(name=name, description=description, owner=actor, launch=launch))
        audit_write(actor, job, Action.CREATE)
    return job


def saved_job_edit(*, actor: AbstractBaseUser, job_id: int, name: str | None = None,
                   description: str | None = None, launch: dict | None = None) -> SavedJob:
    """Change a job's name, description or launch (replaced whole). Needs operate on its
    target as it is, and on the new one."""
    job = saved_job_visible(actor, job_id)
    job_changeable_check(actor, job)
    if launch is not None:
        launch_operable_check(actor, launch)
        job.launch = launch
    if name is not None:
        _named(name, job)
        job.name = name
    if description is not None:
        job.description = description
    with transaction.atomic():
        _saved(job)
        audit_write(actor, job, Action.EDIT)
    return job


def saved_job_delete(*, actor: AbstractBaseUser, job_id: int) -> None:
    """Delete a job and its schedules; the tasks it started and its audit stay."""
    job = saved_job_visible(actor, job_id)
    job_changeable_check(actor, job)
    with transaction.atomic():
        audit_write(actor, job, Action.DELETE)
        job.delete()


def saved_job_run(*, actor: AbstractBaseUser, job_id: int,
                  trigger: str = JobRun.Trigger.MANUAL) -> Task:
    """Start the job's launch as a task of the actor's, checked now (rights on the hosts the
    target expands to today, approval, quota), linked to the job with the version it used."""
    job = saved_job_visible(actor, job_id)
    with transaction.atomic():
        try:
            task = task_create(actor=actor, **launch_arguments(job.launch))
        except InvalidInput as exc:  # the saved launch, not the request, is at fault
            raise Conflict(exc.detail, exc.errors) from None
        JobRun.objects.create(job=job, task=task, version=task.plugin_version.number,
                              trigger=trigger)
        audit_write(actor, job, Action.RUN, task)
    return task
