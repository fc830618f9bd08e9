"""Celery tasks of notifications (names and queues in ccs.routing)."""

from celery import shared_task

from ccs import routing

from . import services


@shared_task(name=routing.TASK_NOTIFY_DELIVER, acks_late=True)
def notification_deliver(notification_id: int) -> bool:
    """Callbacks worker: send one notification (its retries are scheduled by the service)."""
    return services.notification_deliver(notification_id=notification_id)


@shared_task(name=routing.TASK_NOTIFY_COLLECT)
def notifications_collect() -> int:
    """Beat: queue the notifications of what happened lately; deliver what is due."""
    return services.notifications_collect()
