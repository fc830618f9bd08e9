"""Writes of tasks and subtasks: create, release by the controller, start and finish shards."""

import logging
from collections import defaultdict
from dataclasses import replace
from itertools import islice

import jsonschema
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from ccs import routing
from ccs.celery import app as celery_app
from ccs.errors import Forbidden, InvalidInput
from permissions.selectors import OPERATE, hosts_for_target, hosts_lacking
from plugins.models import PluginVersion
from plugins.selectors import plugin_version_runnable

from .fanout import FANOUT
from .models import SubTask, Task
from .results import HostResult
from .selectors import shard_jobs
from .states import SubTaskStatus
from .transitions import (
    events_record,
    lock_in_states,
    lock_movable,
    move_uniform,
    move_with_rows,
    sources,
    task_finish_if_done,
    task_mark_started,
)

log = logging.getLogger(__name__)
MAX_LISTED = 20


def params_validate(version: PluginVersion, params: dict) -> None:
    """Check task parameters against the version's JSON Schema, naming the parameter at fault."""
    validator = jsonschema.Draft202012Validator(version.params_schema or {})
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    found: dict[str, list[str]] = defaultdict(list)
    for error in errors:
        path = ".".join(str(p) for p in error.absolute_path)
        found[f"params.{path}" if path else "params"].append(error.message)
    first_field, messages = next(iter(found.items()))
    raise InvalidInput(f"{first_field}: {messages[0]}", dict(found))


def _targets_checked(actor: AbstractBaseUser, nodes: list[str], hosts: list[str]) -> list[tuple]:
    """(host id, datacenter id) of every target host; refuses the whole task if any is not
    operable by the actor, naming up to 20 of them and their count."""
    target = hosts_for_target(node_paths=nodes, hostnames=hosts)
    refused = hosts_lacking(actor, target, OPERATE)
    if names := list(refused.values_list("hostname", flat=True)[:MAX_LISTED]):
        raise Forbidden(
            f"you may not operate {refused.count()} of the target hosts",
            {"target": [f"not operable: {name}" for name in names]},
        )
    rows = list(target.values_list("id", "datacenter_id"))
    if not rows:
        raise InvalidInput.field("target", "the target matches no host")
    return rows


def task_create(
    *,
    actor: AbstractBaseUser,
    plugin: str,
    version: int | None,
    params: dict,
    nodes: list[str],
    hosts: list[str],
    run_as: str,
    timeout: int | None,
    priority: str,
    callback_url: str = "",
) -> Task:
    """Check and create a task with one pending subtask per target host; the controller
    releases it after commit."""
    plugin_version = plugin_version_runnable(plugin=plugin, version=version)
    params_validate(plugin_version, params)
    if run_as not in plugin_version.run_as:
        allowed = ", ".join(plugin_version.run_as)
        raise InvalidInput.field("run_as", f"{run_as} is not allowed (allowed: {allowed})")
    timeout = timeout or plugin_version.timeout
    if timeout > plugin_version.timeout:
        raise InvalidInput.field(
            "control.timeout", f"at most {plugin_version.timeout} s for this plugin version"
        )
    targets = _targets_checked(actor, nodes, hosts)
    with transaction.atomic():
        task = Task.objects.create(
            plugin_version=plugin_version, params=params, run_as=run_as, creator=actor,
            timeout=timeout, priority=priority, callback_url=callback_url,
            total_hosts=len(targets),
        )
        SubTask.objects.bulk_create(
            [SubTask(task=task, host_id=h, datacenter_id=dc) for h, dc in targets],
            batch_size=5000,
        )
        transaction.on_commit(
            lambda: celery_app.send_task(routing.TASK_RELEASE, kwargs={"task_id": task.pk})
        )
    return task


def _chunks(items: list[int], size: int):
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def task_release(*, task_id: int) -> int:
    """Queue every pending subtask and send one message per datacenter shard after commit."""
    now = timezone.now()
    task = Task.objects.get(pk=task_id)
    with transaction.atomic():
        locked = lock_movable(task_id, SubTaskStatus.QUEUED)
        moved = move_uniform(task_id, SubTaskStatus.QUEUED, locked, queued_at=now)
        events_record(task_id, moved, now)
        released = {m.subtask_id for m in moved}
        by_dc: dict[str, list[int]] = defaultdict(list)
        for subtask_id, datacenter in SubTask.objects.filter(
            task_id=task_id, status=SubTaskStatus.QUEUED
        ).values_list("id", "datacenter__name"):
            if subtask_id in released:
                by_dc[datacenter].append(subtask_id)
        shards = [
            {"task_id": task.pk, "datacenter": dc, "priority": task.priority, "subtask_ids": ids}
            for dc, all_ids in sorted(by_dc.items())
            for ids in _chunks(sorted(all_ids), settings.CCS_SHARD_SIZE)
        ]
        transaction.on_commit(lambda: _shards_send(shards))
    return len(shards)


def _shards_send(shards: list[dict]) -> None:
    for shard in shards:
        celery_app.send_task(routing.TASK_RUN_SHARD, kwargs=shard)


def shard_start(*, task_id: int, subtask_ids: list[int], worker: str) -> list[int]:
    """Mark the shard's still-queued subtasks running; returns the ids this worker now owns."""
    now = timezone.now()
    with transaction.atomic():
        locked = lock_movable(task_id, SubTaskStatus.RUNNING, subtask_ids)
        moved = move_uniform(task_id, SubTaskStatus.RUNNING, locked, worker=worker, started_at=now)
        events_record(task_id, moved, now)
        if moved:
            task_mark_started(task_id, now)
    return [m.subtask_id for m in moved]


def shard_results_save(*, task_id: int, results: list[HostResult]) -> int:
    """Persist a batch of host results in one statement, with their events; returns rows moved."""
    by_id = {r.subtask_id: r for r in results}
    now = timezone.now()
    with transaction.atomic():
        locked = lock_in_states(task_id, sources(r.status for r in results), by_id)
        moved = move_with_rows(locked, {sid: r.row() for sid, r in by_id.items()})
        moved = [replace(m, data=by_id[m.subtask_id].event_data()) for m in moved]
        events_record(task_id, moved, now)
        task_finish_if_done(task_id, now)
    if len(moved) != len(results):
        log.warning("task %s: %d results arrived for subtasks no longer running",
                    task_id, len(results) - len(moved))
    return len(moved)


def shard_run(*, task_id: int, subtask_ids: list[int], worker: str) -> int:
    """Start the shard's queued subtasks, fan them out, and save results as they arrive."""
    owned = shard_start(task_id=task_id, subtask_ids=subtask_ids, worker=worker)
    if not owned:
        return 0
    jobs = shard_jobs(task_id, owned)
    FANOUT.run(jobs, lambda batch: shard_results_save(task_id=task_id, results=batch))
    return len(owned)
