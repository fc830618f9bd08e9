"""A restart of Redis (broker and event channel) mid-task stops no process of the control plane,
and the task running through it finishes."""

import time

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from ccs.broker import REDIS_TRANSPORT, transport_for
from ccs.stack import Stack, free_port, port_open, wait_for, workers_ready
from tasks.models import SubTask, Task
from tasks.states import TASK_FINAL
from tests.conftest import _on_test_database

PROCESSES = ("controller", "worker-dc1", "worker-dc1-high", "callbacks")


def test_redis_urls_get_the_restart_proof_transport_and_others_kombus_own():
    assert transport_for("redis://127.0.0.1:6379/0") == REDIS_TRANSPORT
    assert transport_for("rediss://cache.example:6380/1") == REDIS_TRANSPORT
    assert transport_for("amqp://guest:guest@127.0.0.1:5672//") is None


@pytest.fixture
def stack_on(redis_server, django_db_setup):
    """The Procfile's web, beat and the workers of dc1 on the test's own Redis."""
    web_port = free_port()
    stack = Stack(env={**_on_test_database(), "CCS_BROKER_URL": redis_server.url(),
                       "CCS_REDIS_URL": redis_server.url(), "CCS_WEB_PORT": str(web_port)})
    for name in (*PROCESSES, "web", "beat"):
        stack.start(name)
    try:
        wait_for(lambda: port_open(web_port), "web", timeout=60, proc=stack.procs["web"])
        wait_for(lambda: workers_ready(redis_server.url(), PROCESSES), "workers", timeout=90)
        yield stack, f"http://127.0.0.1:{web_port}"
    finally:
        stack.stop()


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_redis_restart_mid_task_stops_no_process_and_the_task_finishes(
    redis_server, stack_on, fleet
):
    stack, web = stack_on
    user = get_user_model().objects.create_superuser("op", password="pw")
    api = httpx.Client(base_url=f"{web}/api/v1",
                       headers={"Authorization": f"Token {Token.objects.create(user=user).key}"})
    created = api.post("/tasks/", json={
        "plugin": "sleep", "params": {"seconds": 3}, "target": {"nodes": ["corp/test"]},
        "run_as": "root",
    })
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    _wait(lambda: SubTask.objects.filter(task_id=task_id, status="running").count() == 10,
          "every host running")

    redis_server.restart()  # while the dc1 worker holds the shard, unacknowledged

    _wait(lambda: Task.objects.get(pk=task_id).status in TASK_FINAL, "the task ended")
    assert Task.objects.get(pk=task_id).status == "succeeded"
    assert set(SubTask.objects.filter(task_id=task_id).values_list("status", flat=True)) == {
        "success"
    }
    wait_for(lambda: workers_ready(redis_server.url(), PROCESSES), "workers after", timeout=60)
    for name, proc in stack.procs.items():
        assert proc.poll() is None, f"{name} exited with {proc.returncode}"
    again = api.post("/tasks/", json={
        "plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
    })
    assert again.status_code == 201, again.text
    _wait(lambda: Task.objects.get(pk=again.json()["id"]).status in TASK_FINAL, "the next task")
    assert Task.objects.get(pk=again.json()["id"]).status == "succeeded"
