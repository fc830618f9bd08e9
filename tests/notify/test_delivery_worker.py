"""Notifications delivered by the real callbacks worker: a webhook receiver that is down at
first gets the message once it is up, through the worker's own retries."""

import pytest

from notify.models import Notification
from notify.services import notifications_collect
from tests.agent.procs import wait_until
from tests.factories import hosts_make, task_made
from tests.permissions.conftest import client_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_the_callbacks_worker_retries_until_the_receiver_is_up(workers, admin, builtins,
                                                               receiver):
    made = client_for(admin).post("/api/v1/subscriptions/", {
        "channel": "webhook", "address": receiver.url, "events": ["task.finished"]},
        format="json")
    assert made.status_code == 201, made.content
    task = task_made(admin, hosts_make("dc1", 2, port=1), ["success", "success"])
    assert notifications_collect() == 1
    failed_once = lambda: Notification.objects.get().attempts >= 1  # noqa: E731
    wait_until(failed_once, "a first failed attempt", timeout=30)
    assert Notification.objects.get().last_error == "could not deliver: no HTTP response"
    receiver.up()
    wait_until(lambda: Notification.objects.get().status == "sent", "the delivery", timeout=60)
    sent = Notification.objects.get()
    assert sent.attempts >= 2 and sent.last_error == ""
    assert len(receiver.bodies) == 1
    assert receiver.bodies[0]["text"].startswith(f"*CCS task {task.pk} succeeded*")
