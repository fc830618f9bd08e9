"""The one routing table: every Celery task name and the queue it runs on."""

from typing import Any

from kombu import Queue

QUEUE_CONTROL = "control"
QUEUE_CALLBACKS = "callbacks"

TASK_RELEASE = "ccs.control.task_release"
TASK_RUN_SHARD = "ccs.dc.shard_run"

# Tasks with a fixed queue. Shards go to their datacenter's queue (see route_task).
FIXED_ROUTES: dict[str, str] = {
    TASK_RELEASE: QUEUE_CONTROL,
}


def dc_queue(datacenter: str, priority: str = "normal") -> str:
    """The queue of a datacenter's worker fleet: `dc.<name>` or `dc.<name>.high`."""
    return f"dc.{datacenter}.high" if priority == "high" else f"dc.{datacenter}"


def dc_queues(datacenter: str) -> list[Queue]:
    return [Queue(dc_queue(datacenter)), Queue(dc_queue(datacenter, "high"))]


def route_task(name: str, args: Any, kwargs: dict, options: dict, task: Any = None, **kw: Any):
    if name in FIXED_ROUTES:
        return {"queue": FIXED_ROUTES[name]}
    if name == TASK_RUN_SHARD:
        return {"queue": dc_queue(kwargs["datacenter"], kwargs.get("priority", "normal"))}
    return None
