"""The one routing table: every Celery task name and the queue it runs on."""

from typing import Any

QUEUE_CONTROL = "control"
QUEUE_CALLBACKS = "callbacks"

TASK_RELEASE = "ccs.control.task_release"
TASK_RUN_SHARD = "ccs.dc.shard_run"
TASK_HOST_CONTROL = "ccs.dc.subtasks_control"
TASK_PROBE_PLAN = "ccs.control.hosts_probe_plan"
TASK_PULL = "ccs.dc.shard_pull"
TASK_PROBE = "ccs.dc.hosts_probe"
TASK_CALLBACKS_DELIVER = "ccs.callbacks.deliver"

# Tasks with a fixed queue. Datacenter tasks go to their datacenter's queues (see route_task).
FIXED_ROUTES: dict[str, str] = {
    TASK_RELEASE: QUEUE_CONTROL,
    TASK_PROBE_PLAN: QUEUE_CONTROL,
    TASK_CALLBACKS_DELIVER: QUEUE_CALLBACKS,
}


def dc_queue(datacenter: str, priority: str = "normal") -> str:
    """A datacenter's queue: `dc.<name>` (normal shards), `dc.<name>.high` (high-priority
    shards) or `dc.<name>.control` (pause/resume/stop of running subtasks). The last two are
    consumed by workers of their own, so a flood of normal work never delays them."""
    return f"dc.{datacenter}" if priority == "normal" else f"dc.{datacenter}.{priority}"


def route_task(name: str, args: Any, kwargs: dict, options: dict, task: Any = None, **kw: Any):
    if name in FIXED_ROUTES:
        return {"queue": FIXED_ROUTES[name]}
    if name == TASK_RUN_SHARD:
        return {"queue": dc_queue(kwargs["datacenter"], kwargs.get("priority", "normal"))}
    if name in (TASK_HOST_CONTROL, TASK_PULL, TASK_PROBE):
        return {"queue": dc_queue(kwargs["datacenter"], "control")}
    return None
