"""Notifications: found by the sweep (or told by a schedule), delivered to a real SMTP server
and a real webhook receiver, retried while the receiver is down, failures kept visible."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import override_settings
from django.utils import timezone
from guardian.shortcuts import remove_perm

from jobs.services import schedules_fire_due
from notify.models import Notification
from notify.services import notification_deliver, notifications_collect
from plugins.services import (
    plugin_create,
    plugin_version_approve,
    plugin_version_create,
    plugin_version_submit,
    reviewers_group_ensure,
)
from tasks.models import Task
from tests.factories import task_made
from tests.jobs.test_saved_jobs import JOB
from tests.permissions import conftest as rights
from tests.permissions.conftest import client_for

pytestmark = pytest.mark.django_db
tree = rights.tree


def _subscribe(client, **body):
    return client.post("/api/v1/subscriptions/", body, format="json")


def _hosts(tree):
    from permissions.models import Host

    return list(Host.objects.filter(hostname__startswith="bj-"))


def test_a_failed_task_reaches_the_smtp_server_and_the_webhook_after_it_was_down(
    tree, smtp_sink, receiver
):
    port, inbox = smtp_sink
    member = client_for(tree.member)
    assert _subscribe(member, channel="email", address="member@example.com",
                      events=["task.failed"]).status_code == 201
    made = _subscribe(member, channel="webhook", address=receiver.url,
                      events=["task.failed", "task.finished"])
    assert made.status_code == 201, made.content
    task = task_made(tree.member, _hosts(tree), ["success", "failed"])
    assert notifications_collect() == 2
    assert notifications_collect() == 0  # seen again, told once
    mail = Notification.objects.get(subscription__channel="email")
    smtp = "django.core.mail.backends.smtp.EmailBackend"  # pytest-django sets locmem
    with override_settings(EMAIL_BACKEND=smtp, EMAIL_HOST="127.0.0.1", EMAIL_PORT=port):
        assert notification_deliver(notification_id=mail.pk) is True
    assert inbox.messages[0]["to"] == ["member@example.com"]
    assert f"Subject: CCS task {task.pk} failed" in inbox.messages[0]["data"]
    assert "1 success, 1 failed" in inbox.messages[0]["data"]

    hook = Notification.objects.get(subscription__channel="webhook")
    assert notification_deliver(notification_id=hook.pk) is False  # the receiver is down
    hook.refresh_from_db()
    assert (hook.status, hook.attempts) == ("pending", 1)
    assert hook.last_error == "could not deliver: no HTTP response"
    assert hook.next_attempt_at > timezone.now()
    assert notification_deliver(notification_id=hook.pk) is False  # not due yet: no attempt
    receiver.up()
    Notification.objects.filter(pk=hook.pk).update(next_attempt_at=timezone.now())
    assert notification_deliver(notification_id=hook.pk) is True
    hook.refresh_from_db()
    assert (hook.status, hook.attempts, hook.last_error) == ("sent", 2, "")
    assert receiver.bodies[0]["text"].startswith(f"*CCS task {task.pk} failed*\nTask {task.pk}")


@override_settings(CCS_NOTIFY_ATTEMPTS=2)
def test_a_notification_that_keeps_failing_is_given_up_and_shown_in_the_admin(
    tree, receiver, admin, client
):
    _subscribe(client_for(tree.member), channel="webhook", address=receiver.url,
               events=["task.finished"])
    task_made(tree.member, _hosts(tree), ["success", "success"])
    notifications_collect()
    hook = Notification.objects.get()
    for _ in range(2):
        Notification.objects.filter(pk=hook.pk).update(next_attempt_at=timezone.now())
        notification_deliver(notification_id=hook.pk)
    hook.refresh_from_db()
    assert (hook.status, hook.attempts, hook.next_attempt_at) == ("failed", 2, None)
    client.force_login(admin)
    page = client.get("/admin/notify/notification/?status__exact=failed").content.decode()
    assert "could not deliver: no HTTP response" in page and "task.finished" in page


def test_a_task_paused_at_its_failure_threshold_is_told_once_per_pause(tree):
    _subscribe(client_for(tree.member), channel="email", address="m@example.com",
               events=["task.failed"])
    task = task_made(tree.member, _hosts(tree), ["failed", "pending"])
    Task.objects.filter(pk=task.pk).update(
        status="paused", paused_reason="failure threshold 1 reached: 1 of 2 hosts failed")
    assert notifications_collect() == notifications_collect() + 1 == 1
    assert Notification.objects.get().subject == (
        f"CCS task {task.pk} paused: failure threshold reached")


def test_a_job_subscription_hears_of_its_schedule_failing(tree, smtp_sink):
    member = client_for(tree.member)
    job = member.post("/api/v1/jobs/", JOB, format="json").json()
    made = _subscribe(member, channel="email", address="team@example.com",
                      events=["schedule.failed"], job=job["id"])
    assert made.status_code == 201, made.content
    member.post(f"/api/v1/jobs/{job['id']}/schedules/", {
        "once_at": (timezone.now() + timedelta(hours=1)).isoformat()}, format="json")
    remove_perm("operate_node", tree.member, tree.node["corp/search/frontend/bj"])
    schedules_fire_due(timezone.now() + timedelta(hours=2))
    notification = Notification.objects.get()
    assert (notification.event, notification.subscription.job_id) == (
        "schedule.failed", job["id"])
    assert notification.subject == "CCS: saved job ping-bj did not run"
    assert "unknown node: corp/search/frontend/bj" in notification.text


def test_reviewers_hear_of_a_waiting_version_and_the_author_of_the_verdict(tree):
    reviewers_group_ensure()
    Group.objects.get(name="Reviewers").user_set.add(tree.viewer, tree.owner)
    for who in (tree.viewer, tree.owner, tree.member):
        _subscribe(client_for(who), channel="email", address=f"{who.username}@example.com",
                   events=["review.waiting", "version.reviewed"])
    plugin = plugin_create(actor=tree.owner, name="hello")
    version = plugin_version_create(actor=tree.owner, plugin_id=plugin.pk, interpreter="sh",
                                    body="echo hello\n", run_as=["root"])
    plugin_version_submit(actor=tree.owner, version_id=version.pk)
    notifications_collect()
    waiting = Notification.objects.filter(event="review.waiting")
    assert [n.subscription.user for n in waiting] == [tree.viewer]  # not the author
    plugin_version_approve(actor=tree.viewer, version_id=version.pk)
    notifications_collect()
    reviewed = Notification.objects.get(event="version.reviewed")
    assert reviewed.subscription.user == tree.owner
    assert reviewed.subject == "CCS: hello v1 approved"


@pytest.mark.parametrize(("body", "field", "code"), [
    ({"channel": "pager", "address": "x", "events": ["task.failed"]}, "channel", 400),
    ({"channel": "email", "address": "not-mail", "events": ["task.failed"]}, "address", 400),
    ({"channel": "webhook", "address": "ftp://x/", "events": ["task.failed"]}, "address", 400),
    ({"channel": "webhook", "address": "http://169.254.169.254/", "events": ["task.failed"]},
     "address", 400),
    ({"channel": "email", "address": "a@example.com", "events": []}, "events", 400),
    ({"channel": "email", "address": "a@example.com", "events": ["task.lost"]}, "events.0", 400),
    ({"channel": "email", "address": "a@example.com", "events": ["task.failed"], "job": 999},
     "", 404),
    ({"channel": "email", "address": "a@example.com", "events": ["task.failed"], "x": 1},
     "x", 400),
])
def test_bad_subscriptions_name_the_field(tree, body, field, code):
    answer = _subscribe(client_for(tree.member), **body)
    assert answer.status_code == code, answer.content
    if field:
        assert field in answer.json()["errors"], answer.json()


def test_a_task_subscription_needs_the_right_to_operate_it(tree):
    task = task_made(tree.owner, _hosts(tree), ["success", "success"])
    body = {"channel": "email", "address": "v@example.com", "events": ["task.finished"],
            "task": task.pk}
    assert _subscribe(client_for(tree.viewer), **body).status_code == 403
    assert _subscribe(client_for(tree.outsider), **body).status_code == 404
    assert _subscribe(client_for(tree.member), **body).status_code == 201
