"""Re-run: a new task on the hosts where a task's subtasks ended in the given states."""

from collections.abc import Collection

from django.contrib.auth.models import AbstractBaseUser

from ccs.errors import InvalidInput

from ..control import count_or_percent
from ..models import SubTask, Task
from ..states import FINAL, OUTCOME_FAILED
from .create import ControlData, task_create


def task_rerun(
    *, actor: AbstractBaseUser, task_id: int, statuses: Collection[str] = OUTCOME_FAILED
) -> Task:
    """A new task with the same plugin version, params, account and control data, on the
    hosts whose subtasks ended in `statuses` (default failed, timeout, lost). Rights, quota
    and the version's approval are checked now, as for any new task."""
    wanted = sorted(set(statuses))
    if not wanted or not set(wanted) <= FINAL:
        allowed = ", ".join(sorted(FINAL))
        raise InvalidInput.field("statuses", f"give one or more of: {allowed}")
    task = Task.objects.select_related("plugin_version__plugin").get(pk=task_id)
    hosts = list(SubTask.objects.filter(task_id=task_id, status__in=wanted)
                 .values_list("host__hostname", flat=True))
    if not hosts:
        raise InvalidInput.field(
            "statuses", f"no host of task {task_id} ended {' or '.join(wanted)}"
        )
    version = task.plugin_version
    control = ControlData(
        timeout=task.timeout, priority=task.priority, concurrency=task.concurrency,
        batches=task.batches, failure_threshold=count_or_percent(task.failure_threshold),
        auto_resume=task.auto_resume, task_type=task.task_type,
    )
    return task_create(
        actor=actor, plugin=version.plugin.name, version=version.number, params=task.params,
        nodes=[], hosts=hosts, run_as=task.run_as, control=control,
    )
