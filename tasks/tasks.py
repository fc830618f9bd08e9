"""Celery tasks of the task engine: thin wrappers that take ids and call one service."""

from celery import shared_task

from ccs import routing

from . import services


@shared_task(name=routing.TASK_RELEASE, acks_late=True)
def task_release(task_id: int) -> int:
    """Controller: queue a task's pending subtasks as datacenter shards."""
    return services.task_release(task_id=task_id)


@shared_task(name=routing.TASK_RUN_SHARD, bind=True, acks_late=True)
def shard_run(self, task_id: int, datacenter: str, priority: str, subtask_ids: list[int]) -> int:
    """Datacenter worker: run one shard of subtasks on their hosts."""
    return services.shard_run(
        task_id=task_id, subtask_ids=subtask_ids, worker=self.request.hostname or ""
    )
