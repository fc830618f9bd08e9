"""The subtask and task state machines: every state and every legal transition, in one place.

Subtask states:
  pending   created, waiting for the controller to release it (concurrency, batches)
  held      paused before it reached its host; resume makes it pending again
  queued    released: its shard is on the datacenter's queue (again, if the sitter found
            that its agent never received it)
  running   its worker sent it to the host's agent
  paused    its process group is frozen on the host (SIGSTOP); resume continues it
  success   the plugin exited 0
  failed    the plugin exited non-zero, the agent refused the job (reason says why),
            or the host could not be reached
  timeout   the plugin ran past the per-host timeout; the agent killed its process group
  stopped   an operator stopped it: before it started, or by killing its process group
  lost      the sitter could not learn its outcome from the agent (reason says why)
"""

from django.db import models


class SubTaskStatus(models.TextChoices):
    PENDING = "pending"
    HELD = "held"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    STOPPED = "stopped"
    LOST = "lost"


S = SubTaskStatus
FINAL = frozenset({S.SUCCESS, S.FAILED, S.TIMEOUT, S.STOPPED, S.LOST})
NOT_STARTED = frozenset({S.PENDING, S.HELD, S.QUEUED})
ON_HOST = frozenset({S.RUNNING, S.PAUSED})
FAILURES = frozenset({S.FAILED, S.TIMEOUT})

# target state -> the states it may be entered from
LEGAL_PREDECESSORS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.HELD}),
    S.HELD: frozenset({S.PENDING, S.QUEUED}),
    # From running only by the sitter, for a job its agent never received.
    S.QUEUED: frozenset({S.PENDING, S.RUNNING}),
    S.RUNNING: frozenset({S.QUEUED, S.PAUSED}),
    S.PAUSED: frozenset({S.RUNNING}),
    # A result may race an operator's pause: the process had already ended.
    S.SUCCESS: ON_HOST,
    S.FAILED: ON_HOST,
    S.TIMEOUT: ON_HOST,
    S.STOPPED: NOT_STARTED | ON_HOST,
    S.LOST: ON_HOST | {S.QUEUED},
}


class TaskStatus(models.TextChoices):
    """pending: nothing released yet; running; paused: releases nothing (operator, a batch
    pause point, or the failure threshold; `paused_reason` says which); finished: every subtask
    ended; stopped: an operator stopped it."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"


TASK_ACTIVE = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.PAUSED})


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

# Hosts a task "had failures" on, and that a re-run runs again.
UNSUCCESSFUL = frozenset({S.FAILED, S.TIMEOUT, S.LOST})
