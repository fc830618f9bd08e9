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

    job = models.ForeignKey(SavedJob, null=True, on_delete=models.SET_NULL, related_name="audit")
    job_name = models.CharField(max_length=100)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                              related_name="+")
    action = models.CharField(max_length=8, choices=Action.choices)
    launch = models.JSONField(default=dict, blank=True)
    task = models.PositiveBigIntegerField(null=True, blank=True, help_text="the task a run started")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
