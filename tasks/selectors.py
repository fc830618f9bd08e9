"""Reads of tasks and subtasks."""

import operator
import re
from datetime import date
from functools import reduce

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Left

from ccs.errors import InvalidInput
from permissions.rights import OPERATE, VIEW
from permissions.selectors import hosts_with_perm

from .models import COUNT_FIELDS, SubTask, Task, count_field
from .states import ON_HOST, OUTCOME_FAILED, SubTaskStatus


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
        SELECT g.status, g.exit_code, g.n, g.hosts, x.stdout, x.stderr, x.reason, g.output_hash
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
        ), x.stdout, x.stderr, x.reason, g.output_hash
        FROM g JOIN tasks_subtask x ON x.id = g.sample
        ORDER BY g.n DESC, g.status, g.exit_code""",
}


def task_summary(task_id: int, datacenter: str | None = None) -> list[dict]:
    """Groups of identical outcome (status, exit code, output), largest first, each with its
    count, up to 10 sample hosts, one sample of the output, and the `key` that selects its
    subtasks (subtasks_filtered); one query."""
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
         "stdout": stdout, "stderr": stderr, "reason": reason,
         "key": group_key(status, code, digest)}
        for status, code, count, hosts, stdout, stderr, reason, digest in rows
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


GROUP_KEY = re.compile(r"([a-z]+):(-?\d{0,10}):([0-9a-f]{0,64})")


def group_key(status: str, exit_code: int | None, output_hash: str) -> str:
    """A summary group as one token, `status:exit code:output hash` (no exit code: empty)."""
    return f"{status}:{'' if exit_code is None else exit_code}:{output_hash}"


def _in_group(key: str) -> Q:
    match = GROUP_KEY.fullmatch(key)
    if match is None or match[1] not in SubTaskStatus.values:
        raise InvalidInput.field("group", f"not a group key (status:exit code:hash): {key!r}")
    status, code, digest = match.groups()
    exit_code = Q(exit_code__isnull=True) if code == "" else Q(exit_code=int(code))
    return Q(status=status, output_hash=digest) & exit_code


def subtasks_filtered(
    task_id: int, *, status: str | None = None, datacenter: str | None = None,
    group: str | None = None, host: str | None = None,
) -> QuerySet[SubTask]:
    """A task's subtasks in id order, in one state, datacenter and summary group (its `key`),
    with `host` in their host name; an unknown state or a malformed group key is refused,
    naming it."""
    rows = SubTask.objects.filter(task_id=task_id).select_related("host", "datacenter")
    if status and status not in SubTaskStatus.values:
        raise InvalidInput.field("status", f"unknown state: {status}")
    if status:
        rows = rows.filter(status=status)
    if datacenter:
        rows = rows.filter(datacenter__name=datacenter)
    if group:
        rows = rows.filter(_in_group(group))
    if host:
        rows = rows.filter(host__hostname__icontains=host)
    return rows.order_by("id")


def _output_heads(rows: QuerySet[SubTask]) -> QuerySet[SubTask]:
    """Rows with the head of their output (`stdout_head`, `stderr_head`), not all of it."""
    return rows.defer("stdout", "stderr").annotate(
        stdout_head=Left("stdout", 200), stderr_head=Left("stderr", 200)
    )


def host_rows(task_id: int, **filters: str) -> QuerySet[SubTask]:
    """The console's host table: filtered subtasks by host name, with their output's head."""
    return _output_heads(subtasks_filtered(task_id, **filters)).order_by("host__hostname")


def task_datacenters(task_id: int) -> list[str]:
    rows = SubTask.objects.filter(task_id=task_id).values_list("datacenter__name", flat=True)
    return sorted(set(rows.distinct()))


def task_phase(task: Task, counts: dict[str, int]) -> str:
    """The task's status as shown: stopped while hosts still run is stopping, until their
    agents confirm."""
    if task.status in ("stopped", "stopping") and any(counts.get(s) for s in ON_HOST):
        return "stopping"
    return task.status


def tasks_history(
    user: AbstractBaseUser, *, creator: str = "", plugin: str = "", status: str = "",
    since: date | None = None, until: date | None = None, failures: bool = False,
) -> QuerySet[Task]:
    """Tasks the user sees, newest first, by creator, plugin, status, creation day and
    whether a host failed, timed out or was lost; each with `unsuccessful`, how many did."""
    tasks = tasks_filtered(tasks_visible_to(user), creator=creator, plugin=plugin, status=status)
    if since:
        tasks = tasks.filter(created_at__date__gte=since)
    if until:
        tasks = tasks.filter(created_at__date__lte=until)
    counters = [F(count_field(state)) for state in sorted(OUTCOME_FAILED)]
    tasks = tasks.annotate(unsuccessful=reduce(operator.add, counters))
    return tasks.filter(unsuccessful__gt=0) if failures else tasks


def host_subtasks(user: AbstractBaseUser, host_id: int) -> QuerySet[SubTask]:
    """The subtasks of a host the user sees, newest first, with their task and plugin."""
    rows = subtasks_visible_to(user).filter(host_id=host_id).select_related(
        "task__plugin_version__plugin", "task__creator"
    )
    return _output_heads(rows).order_by("-id")
