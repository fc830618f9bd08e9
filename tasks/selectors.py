"""Reads of tasks and subtasks."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from permissions.rights import OPERATE, VIEW
from permissions.selectors import hosts_with_perm

from .fanout import HostJob, endpoint_for
from .models import SubTask, Task


def shard_jobs(task_id: int, subtask_ids: list[int]) -> list[HostJob]:
    """The job each of these subtasks sends to its host, built from two queries."""
    task = Task.objects.select_related("plugin_version__plugin").get(pk=task_id)
    version = task.plugin_version
    rows = SubTask.objects.filter(id__in=subtask_ids).values_list(
        "id", "host__hostname", "host__address", "host__port", "host__key_salt"
    )
    common = {
        "meta": version.signed_meta(),
        "signature": version.signature,
        "body": version.body,
        "account": task.run_as,
        "timeout": task.timeout,
        "params": task.params,
    }
    return [
        HostJob(sid, endpoint_for(host, address, port, salt), {"id": f"{task.uid}/{sid}", **common})
        for sid, host, address, port, salt in rows
    ]


def task_counts(task_id: int) -> dict[str, int]:
    rows = SubTask.objects.filter(task_id=task_id).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def tasks_visible_to(user: AbstractBaseUser) -> QuerySet[Task]:
    """Tasks the user created, and tasks all of whose hosts the user can see."""
    tasks = Task.objects.select_related("plugin_version__plugin", "creator")
    if user.is_superuser:
        return tasks
    unseen = SubTask.objects.filter(task=OuterRef("pk")).exclude(
        host__in=hosts_with_perm(user, VIEW)
    )
    return tasks.filter(Q(creator=user) | ~Exists(unseen))


def task_summary(task_id: int, datacenter: str | None = None) -> list[dict]:
    """Groups of identical outcome (status, exit code, output), largest first, with samples."""
    subtasks = SubTask.objects.filter(task_id=task_id)
    if datacenter:
        subtasks = subtasks.filter(datacenter__name=datacenter)
    groups = list(
        subtasks.values("status", "exit_code", "output_hash")
        .annotate(count=Count("id"))
        .order_by("-count", "status", "exit_code")
    )
    for group in groups:
        sample = subtasks.filter(
            status=group["status"], exit_code=group["exit_code"], output_hash=group["output_hash"]
        ).order_by("host__hostname")
        group["hosts"] = list(sample.values_list("host__hostname", flat=True)[:10])
        first = sample.values("stdout", "stderr", "reason").first() or {}
        group.update(first)
    return groups


def task_operable_by(user: AbstractBaseUser, task: Task) -> bool:
    """Its creator, and users who can operate every one of its hosts."""
    if user.is_superuser or task.creator_id == user.pk:
        return True
    outside = SubTask.objects.filter(task=task).exclude(host__in=hosts_with_perm(user, OPERATE))
    return not outside.exists()


def subtasks_visible_to(user: AbstractBaseUser) -> QuerySet[SubTask]:
    """Subtasks of the tasks the user sees, and subtasks on hosts the user may see."""
    subtasks = SubTask.objects.select_related("host", "datacenter")
    if user.is_superuser:
        return subtasks
    return subtasks.filter(
        Q(task__in=tasks_visible_to(user)) | Q(host__in=hosts_with_perm(user, VIEW))
    )


def subtask_operable_by(user: AbstractBaseUser, subtask: SubTask) -> bool:
    """The task's creator, and users who can operate the subtask's host."""
    if user.is_superuser or subtask.task.creator_id == user.pk:
        return True
    return hosts_with_perm(user, OPERATE).filter(pk=subtask.host_id).exists()
