"""Writes of notifications: subscribe, find what happened, deliver with retries.

What happened is found by a sweep (beat, every CCS_NOTIFY_TICK seconds) that reads ended
and threshold-paused tasks, versions waiting for review and reviews of the last
CCS_NOTIFY_WINDOW minutes: the hot path writes nothing for it. A schedule's failed
occurrence is told by the schedule's own service. Each notification is one row, unique per
subscription, event and subject, so a sweep that sees an event twice tells it once; the
callbacks worker delivers it (e-mail through Django's mail framework, webhooks through the
callbacks' SSRF-safe sender) and retries with backoff until CCS_NOTIFY_ATTEMPTS."""

import json
import logging
import random
import smtplib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from ccs.errors import Forbidden, InvalidInput, NotFound
from jobs.models import JobRun, Occurrence
from jobs.selectors import saved_job_visible
from jobs.services import job_changeable_check
from plugins.models import PluginAudit, PluginVersion
from tasks.models import Task
from tasks.selectors import task_operable_by, tasks_visible_to
from tasks.services.callbacks import callback_post, callback_url_check
from tasks.states import TASK_FINAL, TaskStatus

from . import dispatch
from .models import Event, Notification, Subscription

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=120)  # one deliverer at a time per notification
THRESHOLD = "failure threshold"  # how tasks.services.release words that pause


@dataclass(frozen=True)
class Happened:
    """One event to tell: what, about what (the dedupe key), and in words."""

    event: str
    key: str
    subject: str
    text: str


def subscription_create(*, actor: AbstractBaseUser, channel: str, address: str,
                        events: list[str], job_id: int | None = None,
                        task_id: int | None = None) -> Subscription:
    """Subscribe: to one's own events, or (with the right to change it) a saved job's, or
    (with the right to operate it) a task's."""
    _address_check(channel, address)
    if not events or not set(events) <= set(Event.values):
        raise InvalidInput.field("events", f"give one or more of: {', '.join(Event.values)}")
    if job_id is not None and task_id is not None:
        raise InvalidInput.field("job", "a subscription is for a job or for a task, not both")
    job = saved_job_visible(actor, job_id) if job_id is not None else None
    if job is not None:
        job_changeable_check(actor, job)
    task = _task_operable(actor, task_id) if task_id is not None else None
    return Subscription.objects.create(user=actor, job=job, task=task, channel=channel,
                                       address=address, events=sorted(set(events)))


def _address_check(channel: str, address: str) -> None:
    if channel == Subscription.Channel.EMAIL:
        try:
            validate_email(address)
        except Exception:  # Django's ValidationError: the same words for any bad address
            raise InvalidInput.field("address", f"not an e-mail address: {address!r}") from None
    elif channel == Subscription.Channel.WEBHOOK:
        try:
            callback_url_check(address)
        except InvalidInput as exc:
            raise InvalidInput.field("address", exc.errors["callback_url"][0]) from None
    else:
        raise InvalidInput.field("channel", "email or webhook")


def _task_operable(actor: AbstractBaseUser, task_id: int) -> Task:
    task = tasks_visible_to(actor).filter(pk=task_id).first()
    if task is None:
        raise NotFound(f"no task {task_id}")
    if not task_operable_by(actor, task):
        raise Forbidden("you may not operate every host of this task", {"task": ["operate"]})
    return task


def subscription_delete(*, actor: AbstractBaseUser, subscription_id: int) -> None:
    if not Subscription.objects.filter(pk=subscription_id, user=actor).delete()[0]:
        raise NotFound(f"no subscription {subscription_id}")


def notifications_collect(now: datetime | None = None) -> int:
    """Find what happened in the window and queue a notification per interested
    subscription (once each); ask for the delivery of every one that is due."""
    now = now or timezone.now()
    since = now - timedelta(minutes=settings.CCS_NOTIFY_WINDOW)
    made = _tasks_ended(since) + _tasks_paused() + _reviews_waiting(since) + \
        _versions_reviewed(since)
    deliveries_request(now)
    return made


def _tell(subscriptions: QuerySet[Subscription], happened: Happened) -> int:
    """A notification per interested subscription that has none of this yet; how many."""
    told = set(Notification.objects.filter(event=happened.event, key=happened.key)
               .values_list("subscription_id", flat=True))
    rows = [Notification(subscription=s, event=happened.event, key=happened.key,
                         subject=happened.subject, text=happened.text)
            for s in subscriptions if happened.event in s.events and s.pk not in told]
    Notification.objects.bulk_create(rows, ignore_conflicts=True)  # a sweep at once: once
    return len(rows)


def _task_subscriptions(task: Task) -> QuerySet[Subscription]:
    jobs = JobRun.objects.filter(task=task).values("job_id")
    return Subscription.objects.filter(
        Q(job__isnull=True, task__isnull=True, user_id=task.creator_id)
        | Q(job_id__in=jobs) | Q(task=task))


def _task_text(task: Task) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in task.counts().items())
    reason = f"\n{task.paused_reason}" if task.paused_reason else ""
    return (f"Task {task.pk}: {task.plugin_version.plugin.name} v{task.plugin_version.number} "
            f"as {task.run_as} on {task.total_hosts} hosts, by {task.creator.get_username()}: "
            f"{task.status} ({counts}).{reason}")


def _heard(tasks: QuerySet[Task]) -> QuerySet[Task]:
    """Those of the tasks someone subscribed to (by creator, saved job or task): only they
    cost queries of their own."""
    mine = Subscription.objects.filter(job__isnull=True, task__isnull=True)
    return tasks.filter(
        Q(creator_id__in=mine.values("user_id"))
        | Q(job_run__job_id__in=Subscription.objects.values("job_id"))
        | Q(pk__in=Subscription.objects.values("task_id"))
    ).select_related("plugin_version__plugin", "creator")


def _tasks_ended(since: datetime) -> int:
    tasks = _heard(Task.objects.filter(status__in=TASK_FINAL, finished_at__gte=since))
    made = 0
    for task in tasks:
        failed = task.status == TaskStatus.FAILED
        event = Event.TASK_FAILED if failed else Event.TASK_FINISHED
        made += _tell(_task_subscriptions(task), Happened(
            event, f"task:{task.pk}", f"CCS task {task.pk} {task.status}", _task_text(task)))
    return made


def _tasks_paused() -> int:
    """Tasks paused at their failure threshold now; each such pause is told once."""
    tasks = _heard(Task.objects.filter(status=TaskStatus.PAUSED,
                                       paused_reason__startswith=THRESHOLD))
    made = 0
    for task in tasks:
        key = f"task:{task.pk}:paused:{task.failures_acknowledged}"
        made += _tell(_task_subscriptions(task), Happened(
            Event.TASK_FAILED, key, f"CCS task {task.pk} paused: failure threshold reached",
            _task_text(task)))
    return made


def _reviews_waiting(since: datetime) -> int:
    versions = PluginVersion.objects.filter(
        status=PluginVersion.Status.PENDING, submitted_at__gte=since).select_related(
        "plugin", "author")
    reviewers = get_user_model().objects.with_perm(
        "plugins.review_pluginversion", backend="django.contrib.auth.backends.ModelBackend")
    made = 0
    for version in versions:
        mine = Subscription.objects.filter(
            job__isnull=True, task__isnull=True,
            user__in=reviewers.exclude(pk=version.author_id))
        made += _tell(mine, Happened(
            Event.REVIEW_WAITING, f"version:{version.pk}:pending",
            f"CCS: {version.plugin.name} v{version.number} waits for review",
            f"{version.author.get_username()} submitted {version.plugin.name} "
            f"v{version.number} for review."))
    return made


def _versions_reviewed(since: datetime) -> int:
    actions = (PluginAudit.Action.APPROVE, PluginAudit.Action.REJECT)
    audits = PluginAudit.objects.filter(action__in=actions, at__gte=since).select_related(
        "version__plugin", "actor")
    made = 0
    for audit in audits:
        version = audit.version
        mine = Subscription.objects.filter(job__isnull=True, task__isnull=True,
                                           user_id=version.author_id)
        verdict = "approved" if audit.action == PluginAudit.Action.APPROVE else "rejected"
        made += _tell(mine, Happened(
            Event.VERSION_REVIEWED, f"version:{version.pk}:{audit.action}",
            f"CCS: {version.plugin.name} v{version.number} {verdict}",
            f"{audit.actor.get_username()} {verdict} {version.plugin.name} "
            f"v{version.number}. {audit.detail.get('reason', '')}".strip()))
    return made


def schedule_failed_tell(occurrence: Occurrence) -> None:
    """Tell the schedule's owner and the job's subscribers that an occurrence could not run
    (in the occurrence's transaction; delivered after commit)."""
    schedule = occurrence.schedule
    subscriptions = Subscription.objects.filter(
        Q(job__isnull=True, task__isnull=True, user_id=schedule.owner_id)
        | Q(job_id=schedule.job_id))
    _tell(subscriptions, Happened(
        Event.SCHEDULE_FAILED, f"occurrence:{occurrence.pk}",
        f"CCS: saved job {schedule.job.name} did not run",
        f"The occurrence of {occurrence.at:%Y-%m-%d %H:%M} UTC of saved job "
        f"{schedule.job.name} (schedule {schedule.pk}, owner "
        f"{schedule.owner.get_username()}) did not run: {occurrence.error}"))
    transaction.on_commit(lambda: deliveries_request())


def deliveries_request(now: datetime | None = None) -> int:
    """Ask the callbacks worker to deliver every pending notification that is due."""
    now = now or timezone.now()
    due = Notification.objects.filter(status=Notification.Status.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    ids = list(due.values_list("pk", flat=True)[:1000])
    for pk in ids:
        dispatch.notification_deliver(pk).send()
    return len(ids)


def notification_deliver(*, notification_id: int) -> bool:
    """Send one notification if it is pending and due (one deliverer at a time); on failure
    schedule the next attempt with backoff, or give up after CCS_NOTIFY_ATTEMPTS."""
    now = timezone.now()
    claimed = Notification.objects.filter(pk=notification_id,
                                          status=Notification.Status.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    ).update(next_attempt_at=now + LEASE)
    if not claimed:
        return False
    notification = Notification.objects.select_related("subscription").get(pk=notification_id)
    error = _send(notification)
    if not error:
        Notification.objects.filter(pk=notification_id).update(
            status=Notification.Status.SENT, sent_at=timezone.now(), last_error="",
            attempts=notification.attempts + 1, next_attempt_at=None)
        return True
    _failed(notification, error)
    return False


def _send(notification: Notification) -> str:
    """Deliver once: the error in words, or "" when it was accepted."""
    subscription = notification.subscription
    if subscription.channel == Subscription.Channel.EMAIL:
        try:
            send_mail(notification.subject, notification.text, settings.DEFAULT_FROM_EMAIL,
                      [subscription.address])
        except (smtplib.SMTPException, OSError) as exc:
            log.info("notification %s: mail failed: %s", notification.pk, exc)
            return f"mail not accepted: {type(exc).__name__}: {exc}"[:500]
        return ""
    body = json.dumps({"text": f"*{notification.subject}*\n{notification.text}"}).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "ccs-notify/1"}
    return callback_post(subscription.address, body, headers)[1]


def _failed(notification: Notification, error: str) -> None:
    attempts = notification.attempts + 1
    gave_up = attempts >= settings.CCS_NOTIFY_ATTEMPTS
    delay = min(settings.CCS_CALLBACK_BACKOFF_BASE * 2 ** (attempts - 1), 900)
    delay *= random.uniform(0.5, 1.5)  # jitter: a receiver that comes back is not stampeded
    Notification.objects.filter(pk=notification.pk).update(
        attempts=attempts, last_error=error,
        status=Notification.Status.FAILED if gave_up else Notification.Status.PENDING,
        next_attempt_at=None if gave_up else timezone.now() + timedelta(seconds=delay))
    if gave_up:
        log.error("notification %s: given up after %d attempts: %s", notification.pk,
                  attempts, error)
        return
    log.warning("notification %s failed (%s); retry %d in %.1f s", notification.pk, error,
                attempts, delay)
    dispatch.notification_deliver(notification.pk, countdown=delay).send()
