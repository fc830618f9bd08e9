"""Saved jobs: a launch kept under a name to run again, the tasks it started, and the audit of
every change."""

from django.conf import settings
from django.db import models

from tasks.models import Task


class SavedJob(models.Model):
    """A launch (the body of `POST tasks/`, checked) kept to run again. `launch.version` null
    means the newest approved version at each run; each run records the version it used."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=500, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                              related_name="saved_jobs")
    launch = models.JSONField(help_text="plugin, version, params, target, run_as, control, "
                              "type, callback_url: as POST tasks/ takes them")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class JobRun(models.Model):
    """One task a saved job started: by whom, how (by hand or by a schedule), which version."""

    class Trigger(models.TextChoices):
        MANUAL = "manual"
        SCHEDULE = "schedule"

    job = models.ForeignKey(SavedJob, on_delete=models.CASCADE, related_name="runs")
    # Deleting the task (history retention) deletes its run row; deleting the job keeps tasks.
    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="job_run")
    version = models.PositiveIntegerField(help_text="the plugin version the run used")
    trigger = models.CharField(max_length=8, choices=Trigger.choices, default=Trigger.MANUAL)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]


class JobAudit(models.Model):
    """One change to a saved job (or a run of it): who, what, when, and the launch after it.
    Kept when the job is deleted, and by history retention."""

    class Action(models.TextChoices):
        CREATE = "create"
        EDIT = "edit"
        DELETE = "delete"
        RUN = "run"
        SCHEDULE = "schedule"
        UNSCHEDULE = "unschedule"

    job = models.ForeignKey(SavedJob, null=True, on_delete=models.SET_NULL, related_name="audit")
    job_name = models.CharField(max_length=100)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                              related_name="+")
    action = models.CharField(max_length=16, choices=Action.choices)
    launch = models.JSONField(default=dict, blank=True)
    task = models.PositiveBigIntegerField(null=True, blank=True, help_text="the task a run started")
    detail = models.JSONField(default=dict, blank=True, help_text="a schedule as changed")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]


class Schedule(models.Model):
    """When a saved job runs by itself: a cron expression in a time zone, or once at a time.
    Each occurrence runs as the schedule's owner, with the owner's rights at that moment.
    `next_at` is the next occurrence to fire (null: a one-off that has fired)."""

    job = models.ForeignKey(SavedJob, on_delete=models.CASCADE, related_name="schedules")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                              related_name="job_schedules")
    cron = models.CharField(max_length=100, blank=True, help_text="five fields: m h dom mon dow")
    timezone = models.CharField(max_length=64, default="UTC")
    once_at = models.DateTimeField(null=True, blank=True, help_text="a one-off run at this time")
    paused = models.BooleanField(default=False)
    next_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(cron="") & models.Q(once_at__isnull=False))
                | (~models.Q(cron="") & models.Q(once_at__isnull=True)),
                name="schedule_cron_or_once",
            ),
        ]
        indexes = [models.Index(fields=["next_at"], name="schedule_next_at")]

    def __str__(self) -> str:
        return f"{self.job.name}: {self.cron or self.once_at}"


class Occurrence(models.Model):
    """One occurrence of a schedule, claimed by the first beat that saw it due: the unique
    (schedule, at) row is what makes two beat processes fire it once."""

    class Status(models.TextChoices):
        STARTED = "started"
        FAILED = "failed"

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="occurrences")
    at = models.DateTimeField(help_text="the occurrence's time, as scheduled")
    status = models.CharField(max_length=8, choices=Status.choices)
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    error = models.CharField(max_length=500, blank=True, help_text="why it did not run")
    fired_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "at"], name="occurrence_once"),
        ]
