"""The SSH channel's own checks, without workers: inventory host keys as OpenSSH prints them,
the control plane's verification of jobs before connecting, and output caps."""

import hashlib
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from agent.errors import JobRefused
from permissions.hostkeys import HostKeyRefused, expected_host_key
from plugins.signing import sign_meta
from tasks.hosts.ssh.control import NoTrace, host_request
from tasks.hosts.ssh.endpoint import SshEndpoint
from tasks.hosts.ssh.jobs import job_check, job_run
from tasks.hosts.ssh.remote import job_key

from .conftest import Sshd


def _job(script: str = "echo hi\n", **changes) -> dict:
    """A signed job running `script`; `changes` replace its fields after signing."""
    meta = {"plugin": "t", "version": 1, "interpreter": "sh", "run_as": ["root"], "timeout": 30,
            "sha256": hashlib.sha256(script.encode()).hexdigest()}
    job = {"id": "unit/1", "meta": meta, "signature": sign_meta(meta), "body": script,
           "account": "root", "timeout": 10, "params": {}}
    return {**job, **changes}


def _printed_fingerprint(sshd: Sshd) -> str:
    """`ssh-keygen -l` of the host key: `256 SHA256:… comment (ED25519)`."""
    listed = subprocess.run(["ssh-keygen", "-l", "-f", "/dev/stdin"], input=sshd.host_key,
                            capture_output=True, text=True, check=True)
    return listed.stdout.strip()


def test_a_key_line_and_the_fingerprint_openssh_prints_are_the_same_key(sshd):
    printed = _printed_fingerprint(sshd)
    from_line = expected_host_key(sshd.host_key, "h")
    from_print = expected_host_key(printed, "h")
    assert from_line.fingerprint == from_print.fingerprint == printed.split()[1]
    assert from_line.algorithms == from_print.algorithms == ("ssh-ed25519",)
    known_hosts = expected_host_key(f"[127.0.0.1]:{sshd.port} {sshd.host_key}", "h")
    assert known_hosts == from_line
    assert expected_host_key(printed.split()[1], "h").algorithms == ()


@pytest.mark.parametrize(("recorded", "problem"), [
    ("", "unknown host key: no ssh_host_key recorded for h"),
    ("   ", "unknown host key"),
    ("ssh-ed25519 not-base64!", "unreadable ssh_host_key for h: bad base64 key"),
    ("MD5:12:34", "unreadable ssh_host_key for h: neither a public key line nor a SHA256"),
])
def test_no_or_an_unreadable_host_key_is_refused(recorded, problem):
    with pytest.raises(HostKeyRefused, match=problem):
        expected_host_key(recorded, "h")


@pytest.mark.parametrize(("changes", "reason"), [
    ({"signature": sign_meta({**_job()["meta"], "run_as": ["root", "x"]})}, "bad-signature"),
    ({"body": "rm -rf /\n"}, "body-hash-mismatch"),
    ({"account": "daemon"}, "account-not-allowed: daemon"),
    ({"timeout": 31}, "bad-timeout"),
    ({"params": []}, "bad-job: params"),
])
def test_jobs_are_checked_by_the_control_plane_before_connecting(changes, reason):
    with pytest.raises(JobRefused) as refused:
        job_check(_job(**changes))
    assert refused.value.reason == reason


def test_a_refused_job_never_reaches_the_host(connections):
    nowhere = SshEndpoint("h", "127.0.0.1", 9, "root", "", "daemon")
    result = job_run(connections, nowhere, _job(account="daemon"))["result"]
    assert (result["status"], result["reason"]) == (
        "failed", "refused over ssh: account-not-allowed: daemon"
    )


def test_output_is_capped_like_the_agent_and_a_fingerprint_suffices(sshd, connections,
                                                                     settings):
    settings.CCS_OUTPUT_CAP = 1024
    fingerprint = _printed_fingerprint(sshd).split()[1]
    endpoint = SshEndpoint("h", "127.0.0.1", sshd.port, "root", fingerprint, "root")
    body = "yes a | tr -d '\\n' | head -c 5000\necho -n bb >&2\nexit 7\n"
    result = job_run(connections, endpoint, _job(body))["result"]
    assert (result["status"], result["exit_code"]) == ("failed", 7)
    assert (result["stdout"], result["stdout_truncated"], result["stdout_size"]) == (
        "a" * 1024, True, 5000
    )
    assert (result["stderr"], result["stderr_truncated"]) == ("bb", False)


def test_the_sitter_pull_finds_a_job_whose_worker_died_lost(sshd, connections):
    job_id = f"unit/{uuid.uuid4().hex}"
    left = Path(tempfile.mkdtemp(prefix=f"ccs-{job_key(job_id)}.", dir="/tmp"))
    gone = subprocess.Popen(["true"])
    gone.wait()
    (left / "pgid").write_text(f"{gone.pid}\n")  # its worker died, then so did the job
    endpoint = SshEndpoint("h", "127.0.0.1", sshd.port, "root", sshd.host_key, "root")
    reply = host_request(connections, endpoint, {"op": "status", "job_id": job_id}, 10)
    assert (reply["state"], reply["result"]["status"]) == ("done", "lost")
    assert not left.exists()
    with pytest.raises(NoTrace):
        host_request(connections, endpoint, {"op": "status", "job_id": job_id}, 10)
    assert host_request(connections, endpoint, {"op": "health"}, 10) == {
        "ok": True, "host_id": "h", "channel": "ssh"
    }


def test_a_job_stopped_before_it_reached_the_host_never_starts(sshd, connections):
    job_id = f"unit/{uuid.uuid4().hex}"
    endpoint = SshEndpoint("h", "127.0.0.1", sshd.port, "root", sshd.host_key, "root")
    assert host_request(connections, endpoint, {"op": "pause", "job_id": job_id}, 10)["ok"] is False
    stop = host_request(connections, endpoint, {"op": "stop", "job_id": job_id}, 10)
    assert stop == {"ok": True, "state": "stopping"}
    result = job_run(connections, endpoint, _job("echo ran\n", id=job_id))["result"]
    assert (result["status"], result["reason"], result["stdout"]) == (
        "stopped", "stopped before start", ""
    )
    assert not list(Path("/tmp").glob(f"ccs-{job_key(job_id)}.*"))
