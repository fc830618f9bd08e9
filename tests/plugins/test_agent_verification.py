"""With real Celery workers and `ccs-agent fleet` processes: agents run only what a reviewer
approved and the control plane signed. A body changed after signing, a signature by an unknown
key, or an account outside `run_as` is refused by the agent and the subtask fails saying why;
after a key rotation, approvals under the old and the new key both run; parameters reach the
plugin on stdin and as CCS_PARAM_<NAME>."""

import contextlib
import hashlib
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from django.db import connection, transaction
from django.test import override_settings

from agent.signing import generate_private_key_pem, load_private_key
from plugins.guard import VERSION_TRIGGER, VERSIONS
from plugins.models import PluginVersion
from plugins.signing import accepted_public_keys_pem
from tasks.models import SubTask, Task
from tasks.states import FINAL
from tests.factories import Fleet, free_port, hosts_make
from tests.plugins.conftest import FLEET_HOSTS, version_make

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
HOSTS = FLEET_HOSTS

ECHO = """#!/bin/sh
echo "stdin=$(cat)"
echo "x=$CCS_PARAM_X"
echo "n=$CCS_PARAM_N"
echo "flag=$CCS_PARAM_FLAG"
echo "nested=${CCS_PARAM_NESTED-unset}"
"""
ECHO_SCHEMA = {
    "type": "object",
    "properties": {"x": {"type": "string"}, "n": {"type": "integer"},
                   "flag": {"type": "boolean"}, "nested": {"type": "object"}},
    "required": ["x"],
    "additionalProperties": False,
}


def _run(api, plugin: str, version: int | None = None, params: dict | None = None,
         hosts: list[str] | None = None, run_as: str = "root") -> list[SubTask]:
    target = {"hosts": hosts} if hosts else {"nodes": ["corp/test"]}
    body = {"plugin": plugin, "params": params or {}, "target": target, "run_as": run_as}
    if version is not None:
        body["version"] = version
    response = api.post("/api/v1/tasks/", body, format="json")
    assert response.status_code == 201, response.content
    return _finished(response.json()["id"])


def _finished(task_id: int, timeout: float = 60) -> list[SubTask]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        subtasks = list(SubTask.objects.filter(task_id=task_id).select_related("host")
                        .order_by("host__hostname"))
        if subtasks and all(s.status in FINAL for s in subtasks):
            return subtasks
        time.sleep(0.1)
    pytest.fail(f"task {task_id} unfinished: {[s.status for s in subtasks]}")


def _outcomes(subtasks: list[SubTask]) -> set[tuple]:
    return {(s.status, s.exit_code, s.reason) for s in subtasks}


@contextlib.contextmanager
def _guard_disabled():
    """Let the test play an attacker with write access to the table (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {VERSIONS} DISABLE TRIGGER {VERSION_TRIGGER}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {VERSIONS} ENABLE TRIGGER {VERSION_TRIGGER}")


def test_params_reach_the_plugin_on_stdin_and_as_env(api, people, plugin, fleet):
    version_make(plugin, people.author, "approved", people.reviewer, body=ECHO,
                 params_schema=ECHO_SCHEMA)
    params = {"x": "hello world", "n": 3, "flag": True, "nested": {"a": [1, 2]}}
    subtasks = _run(api, "hello", params=params)
    assert len(subtasks) == HOSTS
    for sub in subtasks:
        assert (sub.status, sub.exit_code) == ("success", 0), sub.reason
        lines = sub.stdout.splitlines()
        assert json.loads(lines[0].removeprefix("stdin=")) == params
        assert lines[1:] == ["x=hello world", "n=3", "flag=true", "nested=unset"]


def test_builtin_sysinfo_and_sleep_run_on_agents(api, people, builtins, fleet):
    for sub in _run(api, "sysinfo"):
        assert sub.status == "success", (sub.reason, sub.stderr)
        info = json.loads(sub.stdout)
        assert {"kernel", "uptime_seconds", "load", "memory", "disks"} <= set(info)
        assert info["kernel"]["release"] and info["memory"]["total"] > 0
        assert all(d["total"] > 0 for d in info["disks"].values())
    slept = _run(api, "sleep", params={"seconds": 1})
    assert {(s.status, s.stdout) for s in slept} == {("success", "slept 1 s\n")}


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("body", "refused by agent: body-hash-mismatch"),
        ("body and sha256", "refused by agent: bad-signature"),
    ],
)
def test_body_altered_after_signing_is_refused(api, people, plugin, fleet, tamper, reason):
    version = version_make(plugin, people.author, "approved", people.reviewer)
    evil = "#!/bin/sh\necho owned\n"
    change = {"body": evil}
    if tamper == "body and sha256":
        change["sha256"] = hashlib.sha256(evil.encode()).hexdigest()
    with _guard_disabled():
        assert PluginVersion.objects.filter(pk=version.pk).update(**change) == 1
    subtasks = _run(api, "hello")
    assert _outcomes(subtasks) == {("failed", None, reason)}
    assert not any(s.stdout for s in subtasks)


def test_signature_by_an_unknown_key_is_refused(api, people, plugin, fleet):
    with override_settings(CCS_SIGNING_KEY=generate_private_key_pem()):
        version_make(plugin, people.author, "approved", people.reviewer)
    assert _outcomes(_run(api, "hello")) == {
        ("failed", None, "refused by agent: bad-signature")
    }


def test_account_outside_run_as_is_refused_by_the_agent(api, people, plugin, fleet):
    version_make(plugin, people.author, "approved", people.reviewer, run_as=["root", "nobody"])
    # The API refuses such a task; a compromised control plane would not, so the task row is
    # changed before the controller sees it (release happens after this commit).
    with transaction.atomic():
        response = api.post("/api/v1/tasks/", {
            "plugin": "hello", "params": {}, "target": {"nodes": ["corp/test"]},
            "run_as": "root",
        }, format="json")
        assert response.status_code == 201, response.content
        Task.objects.filter(pk=response.json()["id"]).update(run_as="daemon")
    subtasks = _finished(response.json()["id"])
    assert _outcomes(subtasks) == {
        ("failed", None, "refused by agent: account-not-allowed: daemon")
    }


def _public_pem(private_pem: bytes) -> str:
    return load_private_key(private_pem).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_after_key_rotation_old_and_new_approvals_both_run(
    api, workers, people, plugin, tmp_path
):
    old, new = generate_private_key_pem(), generate_private_key_pem()
    with override_settings(CCS_SIGNING_KEY=old, CCS_SIGNING_PREVIOUS_KEYS=[]):
        version_make(plugin, people.author, "approved", people.reviewer, body="echo old\n")
    rotated = override_settings(CCS_SIGNING_KEY=new, CCS_SIGNING_PREVIOUS_KEYS=[_public_pem(old)])
    with rotated:
        version_make(plugin, people.author, "approved", people.reviewer, body="echo new\n")
        both = accepted_public_keys_pem()
    assert both == [_public_pem(new), _public_pem(old)]
    fleets = []
    for dc, keys in (("dc1", both), ("dc2", [_public_pem(new)])):
        port = free_port()
        fleets.append(Fleet(tmp_path, hosts_make(dc, HOSTS, port), port, public_keys=keys))
    try:
        by_dc = {}
        for number in (1, 2):
            for sub in _run(api, "hello", version=number):
                by_dc.setdefault((number, sub.host.hostname[:3]), set()).add(
                    (sub.status, sub.stdout, sub.reason))
    finally:
        for running in fleets:
            running.stop()
    assert by_dc == {
        (1, "dc1"): {("success", "old\n", "")},  # agents that kept the old key run old approvals
        (1, "dc2"): {("failed", "", "refused by agent: bad-signature")},
        (2, "dc1"): {("success", "new\n", "")},
        (2, "dc2"): {("success", "new\n", "")},
    }
