"""The broker: a restart of Redis (broker and event channel) mid-task stops no process of the
control plane and the task running through it finishes; RabbitMQ, named by URL, carries a
task end to end while Redis stays the event channel."""

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from ccs.broker import REDIS_TRANSPORT, transport_for
from ccs.stack import Stack, free_port, port_open, wait_for, workers_ready
from tasks.models import SubTask, Task
from tasks.states import TASK_FINAL
from tests.ccs.test_metrics import TOKEN as METRICS_TOKEN
from tests.conftest import _on_test_database
from tests.factories import hosts_make

PROCESSES = ("controller", "worker-dc1", "worker-dc1-high", "callbacks")
PING = {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root"}


def test_redis_urls_get_the_restart_proof_transport_and_others_kombus_own():
    assert transport_for("redis://127.0.0.1:6379/0") == REDIS_TRANSPORT
    assert transport_for("rediss://cache.example:6380/1") == REDIS_TRANSPORT
    assert transport_for("amqp://guest:guest@127.0.0.1:5672//") is None


@contextmanager
def control_plane(broker: str, events: str, log_dir) -> Iterator[tuple[Stack, httpx.Client]]:
    """The Procfile's web, beat and the workers of dc1 on this broker and event Redis, and an
    API client of a superuser on that web."""
    web_port = free_port()
    stack = Stack(env={**_on_test_database(), "CCS_BROKER_URL": broker, "CCS_REDIS_URL": events,
                       "CCS_WEB_PORT": str(web_port), "CCS_METRICS_TOKEN": METRICS_TOKEN},
                  log_dir=log_dir)
    for name in (*PROCESSES, "web", "beat"):
        stack.start(name)
    try:
        wait_for(lambda: port_open(web_port), "web", timeout=60, proc=stack.procs["web"])
        wait_for(lambda: workers_ready(broker, PROCESSES), "workers", timeout=90)
        user = get_user_model().objects.create_superuser("op", password="pw")
        token = Token.objects.create(user=user).key
        with httpx.Client(base_url=f"http://127.0.0.1:{web_port}/api/v1", timeout=30,
                          headers={"Authorization": f"Token {token}"}) as api:
            yield stack, api
    finally:
        stack.stop()


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.1)


def _ran(api: httpx.Client, body: dict, during=None) -> Task:
    """Create the task, call `during()` once every host runs it, wait for its end."""
    created = api.post("/tasks/", json=body)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    if during is not None:
        _wait(lambda: SubTask.objects.filter(task_id=task_id, status="running").count() == 10,
              "every host running")
        during()
    _wait(lambda: Task.objects.get(pk=task_id).status in TASK_FINAL, f"task {task_id} ended")
    return Task.objects.get(pk=task_id)


def _succeeded(task: Task) -> bool:
    statuses = set(SubTask.objects.filter(task=task).values_list("status", flat=True))
    return task.status == "succeeded" and statuses == {"success"}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_redis_restart_mid_task_stops_no_process_and_the_task_finishes(
    redis_server, fleet, tmp_path
):
    url = redis_server.url()
    with control_plane(url, url, tmp_path / "log") as (stack, api):
        # restarted while the dc1 worker holds the shard, unacknowledged
        sleep = {**PING, "plugin": "sleep", "params": {"seconds": 3}}
        assert _succeeded(_ran(api, sleep, during=redis_server.restart))
        wait_for(lambda: workers_ready(url, PROCESSES), "workers after", timeout=60)
        for name, proc in stack.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}"
        assert _succeeded(_ran(api, PING))


@pytest.fixture
def rabbitmq_vhost() -> Iterator[str]:
    """The broker URL of a RabbitMQ vhost of this test's own (CCS_TEST_RABBITMQ_URL's server,
    which must be this machine's: the vhost is made with rabbitmqctl), removed after it."""
    server = os.environ.get("CCS_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    vhost = f"{settings.CCS_EVENT_PREFIX}-{secrets.token_hex(4)}"
    user = urlsplit(server).username or "guest"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    try:
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user,
                        ".*", ".*", ".*"], check=True)
        yield server.rstrip("/") + "/" + vhost
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=True)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_rabbitmq_by_url_carries_a_task_end_to_end(rabbitmq_vhost, fleet, tmp_path):
    with control_plane(rabbitmq_vhost, settings.CCS_REDIS_URL, tmp_path / "log") as (_, api):
        task = _ran(api, PING)
        assert _succeeded(task)
        events = api.get(f"/tasks/{task.pk}/events/", headers={"Accept": "text/event-stream"})
        metrics = api.get(api.base_url.join("/metrics"),
                          headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    queues = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", rabbitmq_vhost.rsplit("/", 1)[1], "name"],
        check=True, capture_output=True, text=True).stdout.split()
    assert {"control", "dc.dc1", "dc.dc1.high", "callbacks"} <= set(queues)
    assert events.status_code == 200 and events.text.count('"to":"success"') == 10
    assert metrics.status_code == 200, metrics.text
    assert "ccs_broker_up 1.0" in metrics.text
    assert 'ccs_queue_messages{queue="dc.dc1"} 0.0' in metrics.text


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_with_the_broker_away_a_request_that_sends_a_message_answers_503(
    web_on_own_redis, redis_server, admin, builtins
):
    hosts_make("dc1", 2, port=1)
    token = Token.objects.create(user=admin).key
    redis_server.stop()
    answer = httpx.post(f"{web_on_own_redis}/api/v1/tasks/", json=PING, timeout=60,
                        headers={"Authorization": f"Token {token}"})
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json() == {
        "detail": "saved, but the message to the workers could not be sent: the broker "
                  "(CCS_BROKER_URL) cannot be reached; retry in a while", "errors": {}}
