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

Task states:
  pending    created; nothing has reached a host yet
  running    a first subtask started
  paused     releases nothing (an operator, a batch pause point, or the failure threshold;
             `paused_reason` says which); what runs on hosts is frozen by an operator's pause
  stopping   an operator asked for a stop; hosts are still confirming that they killed their job
  succeeded  every host succeeded
  failed     every subtask ended, and some host failed, timed out or was lost
  stopped    an operator stopped it (or stopped the last hosts that had not ended)
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
FINAL_CHOICES = sorted(FINAL)  # the ended states, as a choice list
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
    """See the module docstring of the task states."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


T = TaskStatus
TASK_ACTIVE = frozenset({T.PENDING, T.RUNNING, T.PAUSED, T.STOPPING})
TASK_FINAL = frozenset({T.SUCCEEDED, T.FAILED, T.STOPPED})
# Subtask outcomes that make a task `failed`; the default hosts of a re-run.
OUTCOME_FAILED = frozenset({S.FAILED, S.TIMEOUT, S.LOST})

# target task state -> the task states it may be entered from
TASK_LEGAL_PREDECESSORS: dict[str, frozenset[str]] = {
    T.RUNNING: frozenset({T.PENDING, T.PAUSED}),
    # Back to pending: resumed before any of its subtasks started.
    T.PENDING: frozenset({T.PAUSED}),
    # Pausing a paused task again is harmless (it names the new pauser).
    T.PAUSED: frozenset({T.PENDING, T.RUNNING, T.PAUSED}),
    # Stopping again sends the stop to the hosts once more.
    T.STOPPING: frozenset({T.PENDING, T.RUNNING, T.PAUSED, T.STOPPING}),
    # Every subtask ended. A paused task ends too when its last subtasks do (a result
    # racing the pause, a subtask stopped by hand).
    T.SUCCEEDED: frozenset({T.PENDING, T.RUNNING, T.PAUSED}),
    T.FAILED: frozenset({T.PENDING, T.RUNNING, T.PAUSED}),
    T.STOPPED: frozenset({T.PENDING, T.RUNNING, T.PAUSED, T.STOPPING}),
}


def task_outcome(counts: dict[str, int], stop_asked: bool) -> str:
    """The final state of a task whose subtasks all ended, from their counts per state:
    stopped if an operator stopped it, else failed if any host failed, timed out or was
    lost, else stopped if some hosts were stopped one by one, else succeeded."""
    if stop_asked:
        return T.STOPPED
    if any(counts.get(s) for s in OUTCOME_FAILED):
        return T.FAILED
    if counts.get(S.STOPPED):
        return T.STOPPED
    return T.SUCCEEDED


class IllegalTransition(Exception):
    """A transition the state machine does not allow."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"cannot go from {current} to {target}")
        self.current = current
        self.target = target


def predecessors(target: str) -> frozenset[str]:
    """The subtask states from which `target` may be entered; raises for a target with none."""
    try:
        return LEGAL_PREDECESSORS[target]
    except KeyError:
        raise IllegalTransition("any", target) from None


def task_predecessors(target: str) -> frozenset[str]:
    """The task states from which `target` may be entered; raises for a target with none."""
    try:
        return TASK_LEGAL_PREDECESSORS[target]
    except KeyError:
        raise IllegalTransition("any", target) from None
