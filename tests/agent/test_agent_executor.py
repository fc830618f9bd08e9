"""The executor: every refusal, the job's environment, timeouts, output caps and accounts."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import executor as executor_module
from agent.errors import JobRefused
from agent.executor import Executor
from tests.agent.procs import living_members

Job = Callable[..., dict[str, Any]]
ME = pwd.getpwuid(os.geteuid()).pw_name
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs a root agent")


@pytest.fixture
def run(signer: Ed25519PrivateKey) -> Callable[..., dict[str, Any]]:
    def execute(job: dict[str, Any], **options: Any) -> dict[str, Any]:
        executor = Executor([signer.public_key()], **options)
        try:
            return asyncio.run(executor.run(job))
        finally:
            executor.close()

    return execute


def test_altered_body_is_refused_and_not_run(run: Any, make_job: Job, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    job = make_job("echo hello\n")
    job["body"] = f"touch {marker}\n"
    result = run(job)
    assert (result["status"], result["reason"]) == ("refused", "body-hash-mismatch")
    assert result["exit_code"] is None
    assert not marker.exists()


def test_altered_body_with_matching_hash_fails_the_signature(run: Any, make_job: Job) -> None:
    job = make_job("echo hello\n")
    forged = make_job("echo evil\n")
    job["body"], job["meta"]["sha256"] = forged["body"], forged["meta"]["sha256"]
    assert run(job)["reason"] == "bad-signature"


def test_job_signed_by_an_unknown_key_is_refused(run: Any, make_job: Job) -> None:
    job = make_job("echo hello\n", key=Ed25519PrivateKey.generate())
    result = run(job)
    assert (result["job_id"], result["status"]) == (job["id"], "refused")
    assert result["reason"] == "bad-signature"


def test_account_outside_run_as_is_refused(run: Any, make_job: Job) -> None:
    job = make_job("id\n", run_as=["deploy"], account="mallory")
    assert run(job)["reason"] == "account-not-allowed: mallory"


@pytest.mark.parametrize("timeout", [0, 31, -5])
def test_timeout_outside_the_signed_maximum_is_refused(
    run: Any, make_job: Job, timeout: int
) -> None:
    assert run(make_job("true\n", timeout=timeout, max_timeout=30))["reason"] == "bad-timeout"


def test_interpreter_outside_the_allowlist_is_refused(run: Any, make_job: Job) -> None:
    assert run(make_job("print 1\n", interpreter="perl"))["reason"] == "bad-interpreter"


@pytest.mark.parametrize("field", ["id", "meta", "signature", "body", "account", "timeout"])
def test_malformed_job_names_the_field(run: Any, make_job: Job, field: str) -> None:
    job = make_job("true\n")
    job[field] = None
    assert run(job)["reason"] == f"bad-job: {field}"


def test_checks_run_in_the_documented_order(run: Any, make_job: Job) -> None:
    job = make_job("true\n", key=Ed25519PrivateKey.generate(), account="mallory", timeout=0)
    assert run(job)["reason"] == "bad-signature"
    job["body"] = "false\n"
    assert run(job)["reason"] == "body-hash-mismatch"


@as_root
def test_unknown_account_is_refused(run: Any, make_job: Job) -> None:
    job = make_job("id\n", run_as=["no-such-user-ccs"], account="no-such-user-ccs")
    assert run(job)["reason"] == "unknown-account: no-such-user-ccs"


def test_non_root_agent_only_runs_jobs_as_itself(
    run: Any, make_job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module.os, "geteuid", lambda: 65534)
    job = make_job("id\n", run_as=["root", "nobody"], account="root")
    assert run(job)["reason"].startswith("account-not-allowed: root")
    assert run(dict(job, account="nobody"))["reason"] != "account-not-allowed"


def test_params_reach_the_plugin_on_stdin_and_as_environment(
    run: Any, make_job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCS_AGENT_SECRET", "must-not-leak")
    params = {"name": "web tier", "count": 3, "force": True, "nested": {"a": 1}, "bad-name": "x"}
    body = 'cat\necho\necho "$CCS_PARAM_NAME|$CCS_PARAM_COUNT|$CCS_PARAM_FORCE|$CCS_JOB_ID"\nenv\n'
    result = run(make_job(body, job_id="job-42", params=params))
    assert result["status"] == "success", result
    stdin, fields, *env_lines = result["stdout"].splitlines()
    assert json.loads(stdin) == params
    assert fields == "web tier|3|true|job-42"
    env = dict(line.split("=", 1) for line in env_lines if "=" in line)
    assert env["CCS_PARAM_NAME"] == "web tier" and "CCS_PARAM_NESTED" not in env
    assert env["LANG"] == "C.UTF-8" and env["USER"] == ME
    assert "CCS_AGENT_SECRET" not in env
    assert not any(name.startswith("CCS_PARAM_BAD") for name in env)


def test_nonzero_exit_is_failed_with_both_streams(run: Any, make_job: Job) -> None:
    result = run(make_job("echo out\necho err >&2\nexit 3\n", interpreter="bash"))
    assert (result["status"], result["exit_code"]) == ("failed", 3)
    assert (result["stdout"], result["stderr"]) == ("out\n", "err\n")


def test_python3_plugin_runs(run: Any, make_job: Job) -> None:
    body = "import json, sys\nprint(json.load(sys.stdin)['x'] * 2)\n"
    result = run(make_job(body, interpreter="python3", params={"x": 21}))
    assert (result["status"], result["stdout"]) == ("success", "42\n")


def test_timeout_kills_the_whole_process_group_and_keeps_output(run: Any, make_job: Job) -> None:
    body = 'echo "group $$"\nsleep 30 &\necho "child $!"\nsleep 30\necho never\n'
    result = run(make_job(body, timeout=1))
    assert (result["status"], result["exit_code"]) == ("timeout", None)
    lines = result["stdout"].splitlines()
    assert lines[0].startswith("group ") and lines[1].startswith("child ")
    assert "never" not in result["stdout"]
    assert living_members(int(lines[0].split()[1])) == []
    assert 1 <= result["finished_at"] - result["started_at"] < 10


def test_job_ignoring_sigterm_is_killed_after_the_grace(run: Any, make_job: Job) -> None:
    body = "trap '' TERM\necho \"group $$\"\nsleep 30 &\nsleep 30\n"
    result = run(make_job(body, timeout=1), kill_grace=0.3)
    assert result["status"] == "timeout"
    assert living_members(int(result["stdout"].split()[1])) == []


def test_output_is_capped_with_flags_and_total_sizes(run: Any, make_job: Job) -> None:
    body = "head -c 300000 /dev/zero | tr '\\0' a\nhead -c 50 /dev/zero | tr '\\0' b >&2\n"
    result = run(make_job(body), output_cap=1000)
    assert result["status"] == "success"
    assert result["stdout"] == "a" * 1000
    assert (result["stdout_truncated"], result["stdout_size"]) == (True, 300000)
    assert result["stderr"] == "b" * 50
    assert (result["stderr_truncated"], result["stderr_size"]) == (False, 50)


def test_script_lives_in_a_private_directory_removed_afterwards(
    run: Any, make_job: Job, tmp_path: Path
) -> None:
    body = 'echo "$0"\npwd\nstat -c %a . "$0" params.json\nstat -c "%a %U" ..\n'
    result = run(make_job(body), work_dir=str(tmp_path / "work"))
    script, workdir, dir_mode, file_mode, params_mode, parent = result["stdout"].splitlines()
    assert (script, os.path.dirname(workdir)) == ("./job.sh", str(tmp_path / "work"))
    assert (dir_mode, file_mode, params_mode) == ("700", "700", "600")
    assert parent == f"711 {ME}"  # the agent's own: others may pass through, not look
    assert not os.path.exists(workdir)


def test_the_work_directory_must_be_the_agents_alone(
    run: Any, make_job: Job, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # writable by anyone, not sticky: they could swap what is in it
    result = run(make_job("true\n"), work_dir=str(shared / "work"))
    assert (result["status"], result["exit_code"]) == ("failed", None)
    assert result["reason"] == (
        f"spawn-failed: work directory: {shared / 'work'}: {shared} is writable by other accounts"
    )


@as_root
def test_root_agent_runs_the_job_as_the_requested_account(run: Any, make_job: Job) -> None:
    body = 'id -un\nid -u\nid -g\nid -G\necho "$HOME $USER $LOGNAME"\ncat >/dev/null\n'
    result = run(make_job(body, run_as=["nobody"], account="nobody"))
    assert result["status"] == "success", result
    entry = pwd.getpwnam("nobody")
    groups = sorted(os.getgrouplist("nobody", entry.pw_gid))
    name, uid, gid, group_ids, env = result["stdout"].splitlines()
    assert (name, int(uid), int(gid)) == ("nobody", entry.pw_uid, entry.pw_gid)
    assert sorted(int(g) for g in group_ids.split()) == groups  # not root's groups
    assert env == f"{entry.pw_dir} nobody nobody"


def test_plugin_leads_its_own_session_and_process_group(run: Any, make_job: Job) -> None:
    body = "import os\nprint(os.getpid() == os.getpgid(0) == os.getsid(0) != os.getppid())\n"
    result = run(make_job(body, interpreter="python3"))
    assert (result["status"], result["stdout"]) == ("success", "True\n")


def test_dry_mode_checks_everything_but_runs_nothing(
    run: Any, make_job: Job, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    result = run(make_job(f"touch {marker}\n"), exec_mode="dry")
    assert (result["status"], result["exit_code"]) == ("success", 0)
    assert result["stdout"] == "dry-run probe v3\n"
    assert not marker.exists()
    refused = run(make_job("true\n", key=Ed25519PrivateKey.generate()), exec_mode="dry")
    assert refused["reason"] == "bad-signature"


def test_remembered_verifications_still_refuse_other_signatures_and_metadata(
    signer: Ed25519PrivateKey, make_job: Job
) -> None:
    executor = Executor([signer.public_key()])
    good = make_job("echo hi\n")
    executor.check(good)
    executor.check({**good, "id": "again"})  # the same version again: remembered
    forged = {**good, "id": "forged", "signature": make_job(
        "echo hi\n", key=Ed25519PrivateKey.generate())["signature"]}
    widened = {**good, "id": "widened", "meta": {**good["meta"], "run_as": [ME, "root"]}}
    for job in (forged, widened):
        with pytest.raises(JobRefused, match="bad-signature"):
            executor.check(job)
