"""The subtask state machine: every state and every legal transition, in one place.

pending  created, not yet released by the controller
queued   released: its shard is on the datacenter's queue
running  a worker sent it to the host's agent
success  the plugin exited 0
failed   the plugin exited non-zero, or the agent refused the job (reason says why),
         or the host could not be reached
timeout  the plugin ran past the task's per-host timeout and was killed
"""

from django.db import models


class SubTaskStatus(models.TextChoices):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"


FINAL = frozenset({SubTaskStatus.SUCCESS, SubTaskStatus.FAILED, SubTaskStatus.TIMEOUT})

# target state -> the states it may be entered from
LEGAL_PREDECESSORS: dict[str, frozenset[str]] = {
    SubTaskStatus.QUEUED: frozenset({SubTaskStatus.PENDING}),
    SubTaskStatus.RUNNING: frozenset({SubTaskStatus.QUEUED}),
    SubTaskStatus.SUCCESS: frozenset({SubTaskStatus.RUNNING}),
    SubTaskStatus.FAILED: frozenset({SubTaskStatus.RUNNING}),
    SubTaskStatus.TIMEOUT: frozenset({SubTaskStatus.RUNNING}),
}


class TaskStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"


class IllegalTransition(Exception):
    """A transition the state machine does not allow."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"cannot go from {current} to {target}")
        self.current = current
        self.target = target


def predecessors(target: str) -> frozenset[str]:
    """The states from which `target` may be entered; raises for a target with none."""
    try:
        return LEGAL_PREDECESSORS[target]
    except KeyError:
        raise IllegalTransition("any", target) from None
