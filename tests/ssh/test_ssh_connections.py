"""The SSH channel's connections, against a real sshd that counts them itself (its log): one
exec channel per job, one connection for two jobs and the pause, resume and stop of a running
one, a login shell's noise kept out of the job's output, and a timeout that says so."""

import hashlib
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from ccs.stack import wait_for
from plugins.signing import sign_meta
from tasks.hosts.ssh.connections import SshConnections
from tasks.hosts.ssh.control import host_request
from tasks.hosts.ssh.endpoint import SshEndpoint
from tasks.hosts.ssh.jobs import job_run
from tasks.hosts.ssh.remote import job_key
from tasks.hosts.ssh.session import SshJobLost, SshUnreachable

from .conftest import NOISE, NOISE_ERR, Sshd


def _job(script: str, timeout: int = 20) -> dict:
    meta = {"plugin": "t", "version": 1, "interpreter": "sh", "run_as": ["root"], "timeout": 60,
            "sha256": hashlib.sha256(script.encode()).hexdigest()}
    return {"id": f"conn/{uuid.uuid4().hex}", "meta": meta, "signature": sign_meta(meta),
            "body": script, "account": "root", "timeout": timeout, "params": {"who": "x"}}


def _endpoint(sshd: Sshd) -> SshEndpoint:
    return SshEndpoint("noisy", "127.0.0.1", sshd.port, "root", sshd.host_key, "root")


def _job_dirs(job_id: str) -> list[Path]:
    return list(Path("/tmp").glob(f"ccs-{job_key(job_id)}.*"))


def _started(job_id: str) -> list[Path]:
    """The job's directory once its process group is recorded there."""
    return [d for d in _job_dirs(job_id) if (d / "pgid").exists()]


def test_a_job_is_one_exec_and_its_output_is_its_own(noisy_sshd, connections):
    endpoint = _endpoint(noisy_sshd)
    job = _job('echo "out $CCS_PARAM_WHO"\ncat\nprintf "no newline at the end"\necho err >&2\n')
    result = job_run(connections, endpoint, job)["result"]
    assert (result["status"], result["exit_code"]) == ("success", 0), result
    assert result["stdout"] == 'out x\n{"who": "x"}no newline at the end'
    assert result["stderr"] == "err\n"
    assert (noisy_sshd.logins(), noisy_sshd.execs()) == (1, 1)
    assert not _job_dirs(job["id"])
    # the noise is real: a plain command over the same connection shows it
    done = connections.execute(endpoint, ["echo", "plain"])
    assert (done.stdout, done.stderr, done.answer) == (NOISE + "plain\n", NOISE_ERR, "plain")


def test_two_jobs_and_the_control_of_a_running_one_share_one_connection(noisy_sshd, connections):
    endpoint = _endpoint(noisy_sshd)
    for _ in range(2):
        assert job_run(connections, endpoint, _job("echo hi\n"))["result"]["stdout"] == "hi\n"
    assert (noisy_sshd.logins(), noisy_sshd.execs()) == (1, 2)

    job = _job("echo started\nsleep 30\necho never\n")
    replies = []
    running = threading.Thread(target=lambda: replies.append(job_run(connections, endpoint, job)))
    running.start()
    wait_for(lambda: _started(job["id"]), "the job starting")
    for op, state in (("pause", "paused"), ("resume", "running"), ("stop", "stopping")):
        reply = host_request(connections, endpoint, {"op": op, "job_id": job["id"]}, 10)
        assert reply == {"ok": True, "state": state}
    running.join(timeout=30)
    result = replies[0]["result"]
    assert (result["status"], result["reason"], result["stdout"]) == (
        "stopped", "stopped by operator", "started\n")
    assert (noisy_sshd.logins(), noisy_sshd.execs()) == (1, 6)
    assert connections.opened == 1


def test_a_job_whose_connection_dropped_is_left_for_the_sitter(noisy_sshd, connections):
    endpoint = _endpoint(noisy_sshd)
    job = _job("sleep 1\necho late\n")
    replies = []

    def run() -> None:
        try:
            replies.append(job_run(connections, endpoint, job))
        except SshUnreachable as exc:
            replies.append(exc)

    running = threading.Thread(target=run)
    running.start()
    wait_for(lambda: _started(job["id"]), "the job starting")
    directory = _started(job["id"])[0]
    connections.close()  # as when its worker dies
    running.join(timeout=30)
    assert isinstance(replies[0], SshJobLost), replies
    pgid = int((directory / "pgid").read_text())
    wait_for(lambda: subprocess.run(["kill", "-0", "--", f"-{pgid}"],
                                    capture_output=True).returncode != 0, "the job's end")
    assert directory.exists(), "the directory is the sitter's evidence"
    other = SshConnections(per_host=1, channels=8, idle=60, keepalive=0, connects=1)
    try:
        reply = host_request(other, endpoint, {"op": "status", "job_id": job["id"]}, 10)
    finally:
        other.close()
    assert (reply["state"], reply["result"]["status"]) == ("done", "lost")
    assert not directory.exists()


def test_a_command_that_outlives_its_timeout_names_it(sshd, connections):
    endpoint = SshEndpoint("h", "127.0.0.1", sshd.port, "root", sshd.host_key, "root")
    with pytest.raises(SshUnreachable, match=r"^remote command did not complete: no answer "
                                             r"within 1 s$"):
        connections.execute(endpoint, ["sleep", "5"], timeout=1)
