"""With real Celery workers and `ccs-agent fleet` processes: a version revoked for a flaw stops
running everywhere. A canary batch runs it; once it is revoked, the rest of the task is refused
by the agents (the list goes ahead of the jobs on each channel); an idle agent gets the list
from the probe that the revocation sets off."""

import asyncio
import time

import pytest

from agent.client import ChannelPool
from permissions.models import Host
from tasks.hosts.endpoints import endpoint_for
from tasks.models import SubTask, Task
from tests.factories import Fleet, free_port, hosts_make
from tests.plugins.conftest import version_make

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
HOSTS = 3


@pytest.fixture
def fleet(tmp_path, workers, people):
    port = free_port()
    running = Fleet(tmp_path, hosts_make("dc1", HOSTS, port), port)
    yield running
    running.stop()


def _until(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def _outcomes(task_id: int) -> list[tuple[str, str]]:
    return sorted(SubTask.objects.filter(task_id=task_id).values_list("status", "reason"))


def test_a_task_stops_running_a_version_revoked_after_its_canary(api, people, plugin, fleet):
    version = version_make(plugin, people.author, "approved", people.reviewer)
    created = api.post("/api/v1/tasks/", {
        "plugin": "hello", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
        "control": {"batches": [1, "100%"]},
    }, format="json")
    assert created.status_code == 201, created.content
    task_id = created.json()["id"]
    _until(lambda: Task.objects.get(pk=task_id).status == "paused", "the canary's pause point")
    assert _outcomes(task_id) == [("pending", "")] * (HOSTS - 1) + [("success", "")]
    revoked = api.post(f"/api/v1/plugin-versions/{version.pk}/revoke/",
                       {"reason": "the canary deleted a file"}, format="json")
    assert revoked.status_code == 200, revoked.content
    api.post(f"/api/v1/tasks/{task_id}/resume/")
    _until(lambda: Task.objects.get(pk=task_id).status == "finished", "the task to finish")
    refused = ("failed", "refused by agent: revoked: hello v1 (list 1)")
    assert _outcomes(task_id) == [refused] * (HOSTS - 1) + [("success", "")]
    assert not SubTask.objects.filter(task_id=task_id, status="failed").exclude(stdout="").exists()


def _serials() -> list[int]:
    """The revocation list serial each agent's health reports."""
    endpoints = [endpoint_for(h.hostname, h.address, h.port, h.key_salt)
                 for h in Host.objects.order_by("hostname")]

    async def ask() -> list[int]:
        pool = ChannelPool()
        try:
            return [(await pool.request(e, {"op": "health"}, 10))["revocation_serial"]
                    for e in endpoints]
        finally:
            await pool.close()

    return asyncio.run(ask())


def test_idle_agents_get_the_list_from_the_probe_a_revocation_sets_off(
    api, people, plugin, fleet
):
    version = version_make(plugin, people.author, "approved", people.reviewer)
    assert _serials() == [0] * HOSTS
    revoked = api.post(f"/api/v1/plugin-versions/{version.pk}/revoke/",
                       {"reason": "found in review"}, format="json")
    assert revoked.status_code == 200, revoked.content
    _until(lambda: _serials() == [1] * HOSTS, "every agent to report list 1")
