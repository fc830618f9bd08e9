"""`manage.py agent_install` over SSH to a real OpenSSH server: a running agent that serves a
task over the encrypted channel, an idempotent re-run, and clear refusals."""

import contextlib
import io
import os
import signal
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from permissions.models import Host
from tasks.models import SubTask, Task
from tasks.states import TASK_FINAL

from .conftest import ssh_hosts

PYTHON = "/usr/bin/python3"


def _install(*args: str) -> str:
    out = io.StringIO()
    try:
        call_command("agent_install", *args, stdout=out)
    except CommandError as exc:
        raise CommandError(f"{exc}\n{out.getvalue()}") from None
    return out.getvalue()


@pytest.fixture
def prefix(tmp_path) -> Path:
    """The install root; the agent a test started there is stopped afterwards."""
    yield tmp_path
    pidfile = tmp_path / "run" / "ccs-agent.pid"
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


def _task_finished(api, hostname: str) -> SubTask:
    response = api.post("/api/v1/tasks/", {
        "plugin": "ping", "params": {}, "target": {"hosts": [hostname]}, "run_as": "root",
    }, format="json")
    assert response.status_code == 201, response.content
    deadline = time.monotonic() + 30
    while Task.objects.get(pk=response.json()["id"]).status not in TASK_FINAL:
        assert time.monotonic() < deadline, list(SubTask.objects.values_list("status", "reason"))
        time.sleep(0.1)
    return SubTask.objects.get(task_id=response.json()["id"])


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not os.access(PYTHON, os.X_OK), reason=f"{PYTHON} is missing")
def test_agent_install_yields_an_agent_that_serves_a_task(
    api, workers, sshd, builtins, client_key, prefix
):
    host, = ssh_hosts(sshd, 1, prefix="install")
    args = ("--host", host.hostname, "--prefix", str(prefix), "--listen-address", "127.0.0.1",
            "--python", PYTHON)
    first = _install(*args)
    assert f"{host.hostname}  installed" in first, first
    host.refresh_from_db()
    assert (host.channel, host.status) == ("agent", "online")
    assert oct((prefix / "etc/ccs-agent/host.key").stat().st_mode & 0o777) == "0o600"

    again = _install(*args)
    assert "unchanged  installed and healthy; nothing changed" in again, again

    sub = _task_finished(api, host.hostname)
    assert (sub.status, sub.stdout) == ("success", "pong\n"), sub.reason
    assert sub.worker.startswith("dc1@")


@pytest.mark.django_db
def test_a_host_without_cryptography_is_reported_and_left_on_ssh(sshd, client_key, tmp_path):
    host, = ssh_hosts(sshd, 1, prefix="bare")
    bare = tmp_path / "python3"  # a Python without site packages: no cryptography
    bare.write_text(f'#!/bin/sh\nexec {PYTHON} -S "$@"\n')
    bare.chmod(0o755)
    with pytest.raises(CommandError, match="1 of 1 hosts failed") as failed:
        _install("--node", "corp/ssh", "--prefix", str(tmp_path), "--python", str(bare))
    assert "the cryptography package is missing" in str(failed.value)
    assert Host.objects.get(pk=host.pk).channel == "ssh"


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "message"), [
    ((), "give at least one --node PATH or --host NAME"),
    (("--host", "nowhere"), "--host: unknown host: nowhere"),
    (("--node", "corp/none"), "--node: unknown node: corp/none"),
    (("--host", "h", "--port", "0"), "--port: must be from 1 to 65535"),
])
def test_bad_arguments_are_refused(args, message, sshd):
    if "h" in args:
        ssh_hosts(sshd, 1, prefix="h")
        args = ("--host", "h-t000", *args[2:])
    with pytest.raises(CommandError, match=message.replace("/", ".")):
        call_command("agent_install", *args, stdout=io.StringIO())
