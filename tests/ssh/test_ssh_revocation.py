"""The SSH channel checks jobs itself, so it refuses revoked versions itself: against the newest
revocation list its worker process loaded (each shard loads it with its jobs), before it
connects; through real workers, the rest of a task is refused once its canary's version is
revoked."""

import hashlib

import pytest

from agent.errors import JobRefused
from plugins import services
from plugins.signing import sign_meta
from tasks.hosts.revocations import revocations_current
from tasks.hosts.ssh.jobs import job_check
from tasks.models import SubTask
from tests.factories import plugin_approved, task_revoked_after_canary

from .conftest import NODE, ssh_hosts


def _job(body: str, version: int) -> dict:
    meta = {"plugin": "fixme", "version": version, "interpreter": "sh", "run_as": ["root"],
            "timeout": 30, "sha256": hashlib.sha256(body.encode()).hexdigest()}
    return {"id": f"unit/{version}", "meta": meta, "signature": sign_meta(meta), "body": body,
            "account": "root", "timeout": 10, "params": {}}


@pytest.mark.django_db
def test_the_ssh_check_refuses_a_version_on_the_newest_list_it_loaded(admin):
    flawed, fixed = plugin_approved("fixme", "rm -rf /tmp/x\n"), plugin_approved("fixme", "true\n")
    services.plugin_version_revoke(actor=admin, version_id=flawed.pk, reason="rm -rf")
    assert revocations_current().serial >= 1  # what a shard does before its SSH jobs
    with pytest.raises(JobRefused) as refused:
        job_check(_job(flawed.body, 1))
    assert refused.value.reason.startswith("revoked: fixme v1 (list ")
    assert job_check(_job(fixed.body, 2))["meta"]["version"] == 2


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_rest_of_a_task_over_ssh_is_refused_once_its_version_is_revoked(api, workers, sshd):
    ssh_hosts(sshd, 2)
    version = plugin_approved("canary", "echo ran\n")
    task_id, revoked = task_revoked_after_canary(api, version, NODE, "it ran")
    outcomes = sorted(SubTask.objects.filter(task_id=task_id).values_list(
        "status", "stdout", "reason"))
    serial = revoked["revocation"]["serial"]
    assert outcomes == [
        ("failed", "", f"refused over ssh: revoked: canary v1 (list {serial})"),
        ("success", "ran\n", ""),
    ]
