"""With real Celery workers and `ccs-agent fleet` processes: a version revoked for a flaw stops
running everywhere. A canary batch runs it; once it is revoked, the rest of the task is refused
by the agents (the list goes ahead of the jobs on each channel); an idle agent gets the list
from the probe that the revocation sets off."""

import asyncio

import pytest

from agent.client import ChannelPool
from permissions.models import Host
from tasks.hosts.endpoints import endpoint_for
from tasks.models import SubTask
from tests.agent.procs import wait_until
from tests.factories import task_revoked_after_canary
from tests.plugins.conftest import FLEET_HOSTS, version_make

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
HOSTS = FLEET_HOSTS


def _outcomes(task_id: int) -> list[tuple[str, str, str]]:
    return sorted(SubTask.objects.filter(task_id=task_id).values_list("status", "stdout",
                                                                       "reason"))


def test_a_task_stops_running_a_version_revoked_after_its_canary(api, people, plugin, fleet):
    version = version_make(plugin, people.author, "approved", people.reviewer)
    task_id, _ = task_revoked_after_canary(api, version, "corp/test", "the canary broke a file")
    refused = ("failed", "", "refused by agent: revoked: hello v1 (list 1)")
    assert _outcomes(task_id) == [refused] * (HOSTS - 1) + [("success", "hello\n", "")]


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
    wait_until(lambda: _serials() == [1] * HOSTS, "every agent to report list 1", timeout=60)
