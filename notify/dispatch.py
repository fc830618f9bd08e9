"""The Celery messages of notifications (tasks.dispatch's Message; queues in ccs.routing)."""

from ccs import routing
from tasks.dispatch import Message


def notification_deliver(notification_id: int, countdown: float = 0) -> Message:
    """Callbacks worker: send one notification if it is pending and due."""
    return Message(routing.TASK_NOTIFY_DELIVER, {"notification_id": notification_id},
                   countdown or None)
