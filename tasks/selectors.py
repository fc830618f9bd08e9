"""Reads of tasks and subtasks."""

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet

from permissions.rights import OPERATE, VIEW
from permissions.selectors import hosts_with_perm

from .models import COUNT_FIELDS, SubTask, Task


def tasks_filtered(
    tasks: QuerySet[Task], *, status: str | None = None, plugin: str | None = None,
    creator: str | None = None, task_type: str | None = None,
) -> QuerySet[Task]:
    """The tasks matching every filter given."""
    if status:
        tasks = tasks.filter(status=status)
    if plugin:
        tasks = tasks.filter(plugin_version__plugin__name=plugin)
    if creator:
        tasks = tasks.filter(creator__username=creator)
    if task_type:
        tasks = tasks.filter(task_type=task_type)
    return tasks.order_by("-id")


def subtasks_filtered(
    task_id: int, *, status: str | None = None, datacenter: str | None = None
) -> QuerySet[SubTask]:
    """A task's subtasks in id order, matching every filter given."""
    rows = SubTask.objects.filter(task_id=task_id).select_related("host", "datacenter")
    if status:
        rows = rows.filter(status=status)
    if datacenter:
        rows = rows.filter(datacenter__name=datacenter)
    return rows.order_by("id")


def task_counts(task_id: int) -> dict[str, int]:
    """Subtasks per state (the states that have any), from the task's row."""
    return Task.objects.only(*COUNT_FIELDS).get(pk=task_id).counts()


def tasks_visible_to(user: AbstractBaseUser) -> QuerySet[Task]:
    """Tasks the user created, and tasks all of whose hosts the user can see."""
    tasks = Task.objects.select_related("plugin_version__plugin", "creator")
    if user.is_superuser:
        return tasks
    unseen = SubTask.objects.filter(task=OuterRef("pk")).exclude(
        host__in=hosts_with_perm(user, VIEW)
    )
    return tasks.filter(Q(creator=user) | ~Exists(unseen))


SUMMARY_SQL = {
    # Groups with their 10 first hosts and, from one sample subtask, the output: one query.
    "postgresql": """
        WITH g AS (
            SELECT s.status, s.exit_code, s.output_hash, count(*) AS n, min(s.id) AS sample,
                   (array_agg(h.hostname ORDER BY h.hostname))[1:10] AS hosts
            FROM tasks_subtask s JOIN permissions_host h ON h.id = s.host_id
            WHERE s.task_id = %s {where}
            GROUP BY s.status, s.exit_code, s.output_hash
        )
        SELECT g.status, g.exit_code, g.n, g.hosts, x.stdout, x.stderr, x.reason
        FROM g JOIN tasks_subtask x ON x.id = g.sample
        ORDER BY g.n DESC, g.status, g.exit_code""",
    "sqlite": """
        WITH g AS (
            SELECT s.status, s.exit_code, s.output_hash, count(*) AS n, min(s.id) AS sample
            FROM tasks_subtask s WHERE s.task_id = %s {where}
            GROUP BY s.status, s.exit_code, s.output_hash
        )
        SELECT g.status, g.exit_code, g.n, (
            SELECT group_concat(hostname, char(10)) FROM (
                SELECT h.hostname FROM tasks_subtask s JOIN permissions_host h ON h.id = s.host_id
                WHERE s.task_id = %s {where} AND s.status = g.status
                  AND s.exit_code IS g.exit_code AND s.output_hash = g.output_hash
                ORDER BY h.hostname LIMIT 10)
        ), x.stdout, x.stderr, x.reason
        FROM g JOIN tasks_subtask x ON x.id = g.sample
        ORDER BY g.n DESC, g.status, g.exit_code""",
}


def task_summary(task_id: int, datacenter: str | None = None) -> list[dict]:
    """Groups of identical outcome (status, exit code, output), largest first, each with its
    count, up to 10 sample hosts and one sample of the output; one query."""
    where, params = "", [task_id]
    if datacenter:
        where = "AND s.datacenter_id = (SELECT id FROM permissions_datacenter WHERE name = %s)"
        params.append(datacenter)
    sql = SUMMARY_SQL[connection.vendor].format(where=where)
    if connection.vendor == "sqlite":
        params = params * 2
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [
        {"status": status, "exit_code": code, "count": count,
         "hosts": hosts if isinstance(hosts, list) else (hosts or "").split("\n"),
         "stdout": stdout, "stderr": stderr, "reason": reason}
        for status, code, count, hosts, stdout, stderr, reason in rows
    ]


def task_operable_by(user: AbstractBaseUser, task: Task) -> bool:
    """Users who can operate every one of its hosts now; its creator too only then (a right
    revoked since the task was created no longer lets anyone steer it)."""
    if user.is_superuser:
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
    """Users who can operate the subtask's host now (the task's creator included)."""
    if user.is_superuser:
        return True
    return hosts_with_perm(user, OPERATE).filter(pk=subtask.host_id).exists()
