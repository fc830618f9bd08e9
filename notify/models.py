"""Subscriptions (who wants to hear of what, and where) and the notifications they get."""

from django.conf import settings
from django.db import models

from jobs.models import SavedJob
from tasks.models import Task


class Event(models.TextChoices):
    """What a subscription may ask to hear of."""

    TASK_FINISHED = "task.finished", "a task ended (succeeded or stopped)"
    TASK_FAILED = "task.failed", "a task failed, or paused at its failure threshold"
    SCHEDULE_FAILED = "schedule.failed", "a schedule's occurrence could not run"
    REVIEW_WAITING = "review.waiting", "a plugin version waits for my review"
    VERSION_REVIEWED = "version.reviewed", "my plugin version was approved or rejected"


class Subscription(models.Model):
    """Where to tell of events: per user (their tasks, schedules, versions and reviews), per
    saved job (its runs and schedules) or per task. `user` set it up (and, without a job or
    a task, is whom it is about)."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook", "chat webhook (Slack-compatible JSON)"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="subscriptions")
    job = models.ForeignKey(SavedJob, null=True, blank=True, on_delete=models.CASCADE,
                            related_name="subscriptions")
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="subscriptions")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    address = models.CharField(max_length=2000, help_text="an e-mail address or a webhook URL")
    events = models.JSONField(help_text="event names, e.g. [\"task.failed\"]")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.channel} {self.address}"


class Notification(models.Model):
    """One message for one subscription, delivered by the callbacks worker with retries.
    (subscription, event, key) is unique: an event seen twice is told once."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed", "failed (gave up)"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE,
                                     related_name="notifications")
    event = models.CharField(max_length=32, choices=Event.choices)
    key = models.CharField(max_length=200, help_text="what it is about, e.g. task:42")
    subject = models.CharField(max_length=300)
    text = models.TextField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["subscription", "event", "key"],
                                               name="notification_once")]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="notification_due")]

    def __str__(self) -> str:
        return f"{self.event} {self.key} to {self.subscription}"
