"""Run a task again on the hosts where it did not succeed, as a new task."""

from collections.abc import Collection

from django.contrib.auth.models import AbstractBaseUser

from ccs.errors import InvalidInput, NotFound

from ..control import count_or_percent
from ..models import SubTask, Task
from ..selectors import tasks_visible_to
from ..states import UNSUCCESSFUL
from .create import ControlData, task_create


def task_rerun(*, actor: AbstractBaseUser, task_id: int, statuses: Collection[str]) -> Task:
    """A new task with the plugin version, parameters, account and control data of task
    `task_id`, on its hosts that ended in one of `statuses` (failed, timeout, lost). It is
    checked like any new task (the version still approved, rights, quota); the callback URL
    is not carried over, since its secret would be new and shown to no one."""
    wanted = sorted(set(statuses))
    allowed = sorted(UNSUCCESSFUL)
    if not wanted or not set(wanted) <= UNSUCCESSFUL:
        raise InvalidInput.field("statuses", f"name some of {', '.join(allowed)}")
    task = tasks_visible_to(actor).filter(pk=task_id).first()
    if task is None:
        raise NotFound(f"no task {task_id}")
    hosts = list(SubTask.objects.filter(task_id=task_id, status__in=wanted)
                 .values_list("host__hostname", flat=True))
    if not hosts:
        raise InvalidInput.field("statuses", f"no host of task {task_id} is {' or '.join(wanted)}")
    control = ControlData(
        timeout=task.timeout, priority=task.priority, concurrency=task.concurrency,
        batches=task.batches, failure_threshold=count_or_percent(task.failure_threshold),
        auto_resume=task.auto_resume, task_type=task.task_type,
    )
    version = task.plugin_version
    return task_create(
        actor=actor, plugin=version.plugin.name, version=version.number, params=task.params,
        nodes=[], hosts=hosts, run_as=task.run_as, control=control,
    )
