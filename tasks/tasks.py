"""Celery tasks of the task engine: thin wrappers that take ids and call one service."""

import logging

from celery import shared_task

from ccs import routing

from . import services

log = logging.getLogger(__name__)


@shared_task(name=routing.TASK_RELEASE, acks_late=True)
def task_release(task_id: int) -> int:
    """Controller: release what a task may run now, as datacenter shards."""
    return services.task_release(task_id=task_id)


@shared_task(name=routing.TASK_RUN_SHARD, bind=True, acks_late=True)
def shard_run(self, task_id: int, datacenter: str, priority: str, shard_id: int,
              subtask_ids: list[int]) -> int:
    """Datacenter worker: run one shard of subtasks on their hosts."""
    return services.shard_run(task_id=task_id, shard_id=shard_id, subtask_ids=subtask_ids,
                              worker=self.request.hostname or "")


@shared_task(name=routing.TASK_HOST_CONTROL, acks_late=True)
def subtasks_control(task_id: int, datacenter: str, op: str, subtask_ids: list[int]) -> dict:
    """Datacenter control worker: pause, resume or stop jobs on their hosts."""
    answers = services.host_control_run(task_id=task_id, op=op, subtask_ids=subtask_ids)
    log.info("task %s: %s on %d subtasks: %s", task_id, op, len(answers), answers)
    return {str(k): v for k, v in answers.items()}


@shared_task(name=routing.TASK_CALLBACKS_DELIVER, acks_late=True)
def callbacks_deliver(task_id: int) -> int:
    """Callbacks worker: POST a task's undelivered events to its callback URL."""
    return services.callbacks_deliver(task_id=task_id)


@shared_task(name=routing.TASK_PULL, acks_late=True)
def shard_pull(task_id: int, datacenter: str, shard_id: int) -> dict:
    """Datacenter control worker: pull the status of the jobs a shard left on their hosts."""
    return services.shard_pull(task_id=task_id, shard_id=shard_id)


@shared_task(name=routing.TASK_PROBE_PLAN)
def hosts_probe_plan() -> int:
    """Beat: have every datacenter probe its agents."""
    return services.hosts_probe_plan()


@shared_task(name=routing.TASK_PROBE)
def hosts_probe(datacenter: str, host_ids: list[int]) -> dict:
    """Datacenter control worker: health-check these agents."""
    return services.hosts_probe(host_ids=host_ids)
