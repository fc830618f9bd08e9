"""Task creation: check plugin, parameters, target, rights and quota; create the subtasks."""

import re
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

import jsonschema
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from ccs.errors import Forbidden, InvalidInput, TooManyRequests
from permissions.selectors import target_hosts
from plugins.models import PluginVersion
from plugins.selectors import plugin_version_runnable

from ..control import batches_check, threshold_check
from ..models import CallbackCursor, Quota, SubTask, Task
from ..states import TASK_ACTIVE, SubTaskStatus
from .callbacks import callback_url_check
from .release import release_request


@dataclass(frozen=True)
class ControlData:
    """The control data a task is created with (see tasks.control)."""

    timeout: int | None = None
    priority: str = Task.Priority.NORMAL
    concurrency: int | None = None
    batches: list = field(default_factory=list)
    failure_threshold: str = ""
    auto_resume: int | None = None
    task_type: str = "adhoc"


def launch_arguments(launch: dict) -> dict:
    """The keyword arguments of task_create (and task_plan) from a launch as the API takes it
    (a valid TaskCreateIn; a saved job keeps the same shape)."""
    control = launch.get("control", {})
    return {
        "plugin": launch["plugin"], "version": launch.get("version"), "params": launch["params"],
        "nodes": launch["target"]["nodes"], "hosts": launch["target"]["hosts"],
        "run_as": launch["run_as"], "callback_url": launch.get("callback_url", ""),
        "control": ControlData(
            timeout=control.get("timeout"), priority=control.get("priority", Task.Priority.NORMAL),
            concurrency=control.get("concurrency"), batches=control.get("batches", []),
            failure_threshold=control.get("failure_threshold") or "",
            auto_resume=control.get("auto_resume"), task_type=launch.get("type", "adhoc"),
        ),
    }


def launch_body(*, plugin: str, version: int | None, params: dict, nodes: list[str],
                hosts: list[str], run_as: str, control: ControlData,
                callback_url: str = "") -> dict:
    """A launch as the API takes it from task_create's arguments: what a saved job keeps
    when it is saved from the console's launch form."""
    settings_of = {
        "timeout": control.timeout, "priority": control.priority,
        "concurrency": control.concurrency, "batches": control.batches,
        "failure_threshold": control.failure_threshold or None,
        "auto_resume": control.auto_resume,
    }
    return {
        "plugin": plugin, "version": version, "params": params, "run_as": run_as,
        "target": {"nodes": nodes, "hosts": hosts}, "type": control.task_type,
        "control": {k: v for k, v in settings_of.items() if v is not None},
        "callback_url": callback_url,
    }


def params_validate(version: PluginVersion, params: dict) -> None:
    """Check task parameters against the version's JSON Schema, naming the parameter at fault."""
    validator = jsonschema.Draft202012Validator(version.params_schema or {})
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    found: dict[str, list[str]] = defaultdict(list)
    for error in errors:
        for path in _error_paths(error):
            found[".".join(["params", *path])].append(error.message)
    first_field, messages = next(iter(found.items()))
    raise InvalidInput(f"{first_field}: {messages[0]}", dict(found))


def _error_paths(error: jsonschema.ValidationError) -> list[list[str]]:
    """Where a schema error is: the value's path, and for a missing or unexpected property the
    property itself (jsonschema reports those on the enclosing object)."""
    path = [str(p) for p in error.absolute_path]
    instance = error.instance if isinstance(error.instance, dict) else {}
    if error.validator == "required":
        names = [n for n in error.validator_value if n not in instance]
    elif error.validator == "additionalProperties" and error.validator_value is False:
        known = set(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        names = [n for n in instance
                 if n not in known and not any(re.search(p, n) for p in patterns)]
    else:
        names = []
    return [[*path, str(name)] for name in names] or [path]


def targets_checked(actor: AbstractBaseUser, nodes: list[str], hosts: list[str]) -> QuerySet:
    """The target hosts, checked against the actor's rights (permissions.selectors.target_hosts:
    what they cannot see is answered as absent; what they see but may not operate, refused)."""
    return target_hosts(actor, node_paths=nodes, hostnames=hosts)


def subtasks_insert(task: Task, target: QuerySet) -> int:
    """One pending subtask per target host, in host order, in one INSERT ... SELECT: the rows
    never leave the database. Returns how many."""
    select, params = target.order_by("id").values("id", "datacenter_id").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SubTask._meta.db_table} (task_id, host_id, datacenter_id, status, "
            "stdout, stderr, stdout_truncated, stderr_truncated, output_hash, reason, worker) "
            f"SELECT %s, t.id, t.datacenter_id, %s, '', '', %s, %s, '', '', '' FROM ({select}) t",
            [task.pk, SubTaskStatus.PENDING, False, False, *params],
        )
        return cursor.rowcount


def quota_check(actor: AbstractBaseUser, hosts: int | None = None) -> None:
    """Refuse a blocked user (403), a task over the host limit (403), or a user over their
    rate or running-task limit (429), naming the limit and its value. Without `hosts`, every
    limit but the host limit."""
    quota = Quota.objects.filter(user=actor).first() or Quota(user=actor)
    if quota.blocked:
        reason = quota.blocked_reason or "no reason given"
        raise Forbidden(f"you are blocked from starting tasks: {reason}", {"user": [reason]})
    per_task = quota.hosts_per_task or settings.CCS_QUOTA_HOSTS_PER_TASK
    if hosts is not None and hosts > per_task:
        raise Forbidden(
            f"hosts_per_task limit is {per_task}; this task targets {hosts}",
            {"target": [f"hosts_per_task limit is {per_task}"]},
        )
    if hosts is not None:
        return
    per_minute = quota.tasks_per_minute or settings.CCS_QUOTA_TASKS_PER_MINUTE
    recent = Task.objects.filter(
        creator=actor, created_at__gte=timezone.now() - timedelta(minutes=1)
    ).count()
    if recent >= per_minute:
        raise TooManyRequests(f"tasks_per_minute limit is {per_minute}", {"user": ["rate"]})
    running = quota.running_tasks or settings.CCS_QUOTA_RUNNING_TASKS
    if Task.objects.filter(creator=actor, status__in=TASK_ACTIVE).count() >= running:
        raise TooManyRequests(f"running_tasks limit is {running}", {"user": ["running"]})


def version_checked(
    plugin: str, version: int | None, params: dict, run_as: str, control: ControlData
) -> tuple[PluginVersion, int]:
    """The runnable version and the per-host timeout, once params, account and control data
    are checked against it (400 naming the field)."""
    plugin_version = plugin_version_runnable(plugin=plugin, version=version)
    params_validate(plugin_version, params)
    if run_as not in plugin_version.run_as:
        allowed = ", ".join(plugin_version.run_as)
        raise InvalidInput.field("run_as", f"{run_as} is not allowed (allowed: {allowed})")
    timeout = control.timeout or plugin_version.timeout
    if timeout > plugin_version.timeout:
        raise InvalidInput.field(
            "control.timeout", f"at most {plugin_version.timeout} s for this plugin version"
        )
    batches_check(control.batches)
    threshold_check(control.failure_threshold)
    return plugin_version, timeout


def task_create(
    *,
    actor: AbstractBaseUser,
    plugin: str,
    version: int | None,
    params: dict,
    nodes: list[str],
    hosts: list[str],
    run_as: str,
    control: ControlData,
    callback_url: str = "",
) -> Task:
    """Check and create a task with one pending subtask per target host; the controller
    releases it after commit. The callback secret is readable on the returned task only."""
    plugin_version, timeout = version_checked(plugin, version, params, run_as, control)
    if callback_url:
        callback_url_check(callback_url)
    target = targets_checked(actor, nodes, hosts)
    quota_check(actor)
    with transaction.atomic():
        task = Task.objects.create(
            plugin_version=plugin_version, params=params, run_as=run_as, creator=actor,
            timeout=timeout, priority=control.priority, concurrency=control.concurrency,
            batches=control.batches, failure_threshold=threshold_check(control.failure_threshold),
            auto_resume=control.auto_resume, task_type=control.task_type,
            callback_url=callback_url,
            callback_secret=secrets.token_hex(32) if callback_url else "",
        )
        # any refusal below rolls the task back: bad input changes nothing
        count = subtasks_insert(task, target)
        if not count:
            raise InvalidInput.field("target", "the target matches no host")
        quota_check(actor, count)
        Task.objects.filter(pk=task.pk).update(total_hosts=count, n_pending=count)
        task.total_hosts = task.n_pending = count
        if callback_url:
            CallbackCursor.objects.create(task=task)
        release_request(task.pk)
    return task
