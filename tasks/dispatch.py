"""Every Celery message the task engine sends, one typed sender per task of tasks/tasks.py:
the name and the shape of each message are written here and nowhere else (the queues are in
ccs.routing). A sender returns the message; `.send()` sends it now, `.on_commit()` after the
current transaction commits (and never if it rolls back)."""

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from ccs import routing
from ccs.celery import app as celery_app


@dataclass(frozen=True)
class Message:
    """One Celery message, by task name."""

    name: str
    kwargs: dict[str, Any]
    countdown: float | None = None

    def send(self, retry: bool = True) -> None:
        """Send it; while the broker is away, try again for a while (task_publish_retry_policy)
        unless `retry` is off. Raises kombu's OperationalError if it could not be sent."""
        celery_app.send_task(self.name, kwargs=self.kwargs, countdown=self.countdown,
                             retry=retry)

    def on_commit(self) -> None:
        transaction.on_commit(self.send)


def task_release(task_id: int) -> Message:
    """Controller: release what the task may run now."""
    return Message(routing.TASK_RELEASE, {"task_id": task_id})


def shard_run(task_id: int, datacenter: str, priority: str, shard_id: int,
              subtask_ids: list[int]) -> Message:
    """Datacenter worker: run one shard of queued subtasks."""
    return Message(routing.TASK_RUN_SHARD, {
        "task_id": task_id, "datacenter": datacenter, "priority": priority,
        "shard_id": shard_id, "subtask_ids": subtask_ids,
    })


def subtasks_control(task_id: int, datacenter: str, op: str, subtask_ids: list[int]) -> Message:
    """Datacenter control worker: pause, resume or stop these jobs on their hosts."""
    return Message(routing.TASK_HOST_CONTROL, {
        "task_id": task_id, "datacenter": datacenter, "op": op, "subtask_ids": subtask_ids,
    })


def shard_pull(task_id: int, datacenter: str, shard_id: int) -> Message:
    """Datacenter control worker: ask the agents how the jobs a shard left on them ended."""
    return Message(routing.TASK_PULL, {
        "task_id": task_id, "datacenter": datacenter, "shard_id": shard_id,
    })


def hosts_probe_plan() -> Message:
    """Controller: have every datacenter probe its agents now (and bring their revocation lists
    up to date), as beat does every minute."""
    return Message(routing.TASK_PROBE_PLAN, {})


def hosts_probe(datacenter: str, host_ids: list[int]) -> Message:
    """Datacenter control worker: health-check these agents."""
    return Message(routing.TASK_PROBE, {"datacenter": datacenter, "host_ids": host_ids})


def callbacks_deliver(task_id: int, countdown: float = 0) -> Message:
    """Callbacks worker: POST the task's undelivered events to its callback URL."""
    return Message(routing.TASK_CALLBACKS_DELIVER, {"task_id": task_id}, countdown or None)
