"""Tasks, their per-host subtasks, and the event log of every subtask transition."""

import uuid

from django.conf import settings
from django.db import models

from permissions.models import Datacenter, Host
from plugins.models import PluginVersion

from .states import SubTaskStatus, TaskStatus


class Task(models.Model):
    """One run of an approved plugin version on a set of hosts, with its control data."""

    class Priority(models.TextChoices):
        NORMAL = "normal"
        HIGH = "high"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    plugin_version = models.ForeignKey(
        PluginVersion, on_delete=models.PROTECT, related_name="tasks"
    )
    params = models.JSONField(default=dict, blank=True)
    run_as = models.CharField(max_length=64)
    creator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    task_type = models.CharField(max_length=32, default="adhoc")
    concurrency = models.PositiveIntegerField(null=True, blank=True)
    # Sizes of the batches, each a count or a percentage of the hosts; the task pauses after
    # every batch but the last. `batch` is the index of the batch being released.
    batches = models.JSONField(default=list, blank=True)
    batch = models.PositiveIntegerField(default=0)
    auto_resume = models.PositiveIntegerField(null=True, blank=True)
    # When the sitter resumes the task from the pause point it waits at (auto_resume); a time
    # in the database, not a delayed message that a killed controller would hold for an hour.
    resume_at = models.DateTimeField(null=True, blank=True)
    # When the controller was last asked to release more and has not yet done so: the sitter
    # asks again if that is long ago (the message was lost, or its controller died with it).
    release_asked_at = models.DateTimeField(null=True, blank=True)
    failure_threshold = models.CharField(max_length=16, blank=True)
    paused_reason = models.CharField(max_length=300, blank=True)
    # Failures an operator already saw when resuming past the failure threshold.
    failures_acknowledged = models.PositiveIntegerField(default=0)
    timeout = models.PositiveIntegerField()
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    callback_url = models.URLField(max_length=2000, blank=True)
    callback_secret = models.CharField(max_length=64, blank=True, editable=False)
    total_hosts = models.PositiveIntegerField(default=0)
    event_seq = models.BigIntegerField(default=0)
    # How many subtasks are in each state, kept in the transaction of every transition (with
    # the event numbers, under the task row lock): progress, counts and "is it finished?"
    # are read from this row, never by counting 30,000 subtasks.
    n_pending = models.PositiveIntegerField(default=0)
    n_held = models.PositiveIntegerField(default=0)
    n_queued = models.PositiveIntegerField(default=0)
    n_running = models.PositiveIntegerField(default=0)
    n_paused = models.PositiveIntegerField(default=0)
    n_success = models.PositiveIntegerField(default=0)
    n_failed = models.PositiveIntegerField(default=0)
    n_timeout = models.PositiveIntegerField(default=0)
    n_stopped = models.PositiveIntegerField(default=0)
    n_lost = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["resume_at"], name="task_resume_due",
                         condition=models.Q(resume_at__isnull=False)),
            models.Index(fields=["release_asked_at"], name="task_release_asked",
                         condition=models.Q(release_asked_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"task {self.pk}"

    def counts(self) -> dict[str, int]:
        """Subtasks per state, the states that have any."""
        return {state: n for state in SubTaskStatus if (n := getattr(self, count_field(state)))}


def count_field(state: str) -> str:
    """The Task column counting the subtasks in `state`."""
    return f"n_{state}"


COUNT_FIELDS = tuple(count_field(state) for state in SubTaskStatus)


class SubTask(models.Model):
    """One host's part of a task.

    Subtasks and events are the hot tables (30,000 rows of each per task, every subtask moved
    three times): they carry no database foreign-key checks (each costs a lookup per row and
    was a fifth of the database's time per host, bench/README.md), rows are written only by
    tasks/transitions.py with ids it has just read or locked, and Django still enforces
    CASCADE and PROTECT. No index covers `status`, so that a transition can be a HOT update
    (no index entry rewritten; the table keeps room for it on each page, see migration 0005).
    """

    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="subtasks", db_constraint=False,
        db_index=False,  # subtask_one_per_host starts with task_id
    )
    host = models.ForeignKey(
        Host, on_delete=models.PROTECT, related_name="subtasks", db_constraint=False
    )
    datacenter = models.ForeignKey(
        Datacenter, on_delete=models.PROTECT, related_name="+", db_constraint=False,
        db_index=False,
    )
    status = models.CharField(
        max_length=16, choices=SubTaskStatus.choices, default=SubTaskStatus.PENDING
    )
    exit_code = models.IntegerField(null=True, blank=True)
    stdout = models.TextField(blank=True)
    stderr = models.TextField(blank=True)
    stdout_truncated = models.BooleanField(default=False)
    stderr_truncated = models.BooleanField(default=False)
    output_hash = models.CharField(max_length=16, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    # The shard that started it (whose lease answers for it while it is on its host).
    shard = models.ForeignKey(
        "Shard", on_delete=models.DO_NOTHING, related_name="+", db_constraint=False,
        db_index=False, null=True, blank=True,
    )
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "host"], name="subtask_one_per_host"),
        ]

    def __str__(self) -> str:
        return f"subtask {self.pk}"


class Shard(models.Model):
    """One datacenter shard of a task, as one message carries it, and the lease of whoever
    answers for its subtasks now: the worker that runs it, renewing the lease while it does;
    then, for subtasks it left on their hosts or if it died, the sitter's pulls. One row per
    up to CCS_SHARD_SIZE hosts: leases are renewed per shard, never per host."""

    class State(models.TextChoices):
        QUEUED = "queued"  # its message is on the datacenter's queue, no worker took it yet
        RUNNING = "running"  # a worker runs it and holds the lease
        LEFT = "left"  # subtasks still on their hosts that no worker runs: pulled by the sitter
        DONE = "done"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="shards")
    datacenter = models.ForeignKey(Datacenter, on_delete=models.PROTECT, related_name="+")
    subtask_ids = models.JSONField(default=list)
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    worker = models.CharField(max_length=200, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # When its message is sent again if no worker took it by then.
    resend_at = models.DateTimeField()
    sends = models.PositiveIntegerField(default=1)
    left_at = models.DateTimeField(null=True, blank=True)
    pulls = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=["lease_until"], name="shard_lease_lapses",
                         condition=models.Q(state__in=["running", "left"])),
            models.Index(fields=["resend_at"], name="shard_resend_due",
                         condition=models.Q(state="queued")),
        ]

    def __str__(self) -> str:
        return f"shard {self.pk} of task {self.task_id}"


class BeatFiring(models.Model):
    """One firing of a periodic entry, by period: the beat that inserts it sends the entry,
    any other beat running beside it finds the row there and does not (ccs/beat.py)."""

    entry = models.CharField(max_length=200)
    slot = models.BigIntegerField(help_text="seconds since the epoch // the entry's period")
    at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["entry", "slot"], name="beat_fired_once")]

    def __str__(self) -> str:
        return f"{self.entry} #{self.slot}"


class TaskEvent(models.Model):
    """One subtask transition, numbered per task; the source of truth for streams and callbacks."""

    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="events", db_constraint=False,
        db_index=False,  # event_seq_unique starts with task_id
    )
    seq = models.BigIntegerField()
    # Deleted with their task (a subtask is never deleted alone): no index on it.
    subtask = models.ForeignKey(
        SubTask, on_delete=models.DO_NOTHING, related_name="events", db_constraint=False,
        db_index=False,
    )
    hostname = models.CharField(max_length=253)
    from_status = models.CharField(max_length=16)
    to_status = models.CharField(max_length=16)
    at = models.DateTimeField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "seq"], name="event_seq_unique")]
        ordering = ["task_id", "seq"]

    def __str__(self) -> str:
        return f"task {self.task_id} #{self.seq}"


class Quota(models.Model):
    """A user's limits, overriding the defaults in settings; or a block."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ccs_quota"
    )
    tasks_per_minute = models.PositiveIntegerField(null=True, blank=True)
    hosts_per_task = models.PositiveIntegerField(null=True, blank=True)
    running_tasks = models.PositiveIntegerField(null=True, blank=True)
    blocked = models.BooleanField(default=False)
    blocked_reason = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"quota of {self.user}"


class CallbackCursor(models.Model):
    """How far a task's events have been delivered to its callback URL, and the lease of the
    one deliverer working on it."""

    task = models.OneToOneField(Task, on_delete=models.CASCADE, primary_key=True,
                                related_name="callback")
    delivered_seq = models.BigIntegerField(default=0)
    leased_until = models.DateTimeField(null=True, blank=True)
    # The deliverer holding the lease: its writes name it, so one that lost the lease (too
    # slow to renew it) can no longer move the cursor.
    lease_token = models.UUIDField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="consecutive failures")
    failing_since = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    gave_up = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"callbacks of task {self.task_id}"


class CallbackAttempt(models.Model):
    """One POST of a batch of events to a task's callback URL."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="callback_attempts")
    delivery = models.UUIDField()
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField()
    at = models.DateTimeField()

    class Meta:
        ordering = ["task_id", "id"]

    def __str__(self) -> str:
        return f"delivery {self.delivery} of task {self.task_id}"
