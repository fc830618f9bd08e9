"""Tasks on hosts without an agent, over SSH to a real OpenSSH server, through the API and the
real Celery workers: real output, strict host keys, run-as through sudo, and timeout, pause,
resume and stop acting on the remote process group."""

import glob
import os
import shutil
import time
import uuid

import pytest

from tasks.models import SubTask, Task, TaskEvent
from tasks.states import TASK_FINAL
from tests.factories import plugin_approved

from .conftest import NODE, other_host_key, ssh_hosts

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
HELLO = 'echo "hello $CCS_PARAM_WHO from $CCS_HOST_ID as $(id -un)"\ncat\necho oops >&2\n'


def _until(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        states = list(SubTask.objects.values_list("status", "reason"))
        assert time.monotonic() < deadline, f"{what}: {states}"
        time.sleep(0.1)
    return value


def _task(api, plugin: str, *, run_as: str = "root", timeout: int | None = None,
          params: dict | None = None, hosts: list[str] | None = None) -> int:
    target = {"hosts": hosts} if hosts else {"nodes": [NODE]}
    control = {"timeout": timeout} if timeout else {}
    response = api.post("/api/v1/tasks/", {
        "plugin": plugin, "params": params or {}, "target": target, "run_as": run_as,
        "control": control,
    }, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _finished(task_id: int) -> list[SubTask]:
    _until(lambda: Task.objects.get(pk=task_id).status in TASK_FINAL
           and not SubTask.objects.filter(task_id=task_id, status__in=("running", "paused"))
           .exists(), "task not finished")
    return list(SubTask.objects.filter(task_id=task_id).select_related("host").order_by("id"))


def _marked(marker: str) -> dict[int, tuple[int, str]]:
    """pid → (process group, state) of every live process whose command line holds the marker."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()  # noqa: SIM115
            stat = open(f"/proc/{entry}/stat").read()  # noqa: SIM115
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if marker.encode() in cmdline and fields[0] != "Z":
            found[int(entry)] = (int(fields[2]), fields[0])
    return found


def _group(pgid: int) -> list[str]:
    """The states of the live members of a process group."""
    states = []
    for entry in os.listdir("/proc"):
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
        except (OSError, ValueError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            states.append(fields[0])
    return states


def _sleeper(marker: str) -> str:
    # two marked shells, one in the background: the whole group must be frozen and killed
    return f"sh -c 'sleep 300; :' {marker} &\necho started\nsh -c 'sleep 300; :' {marker}\n"


def test_a_task_on_ssh_hosts_succeeds_with_the_real_output(api, workers, sshd, builtins):
    hosts = ssh_hosts(sshd, 3)
    plugin_approved("ssh-hello", HELLO)
    task_id = _task(api, "ssh-hello", params={"who": "ops"})
    subtasks = _finished(task_id)
    assert sorted(sub.host.hostname for sub in subtasks) == [h.hostname for h in hosts]
    for sub in subtasks:
        assert (sub.status, sub.exit_code) == ("success", 0), sub.reason
        assert sub.stdout == f'hello ops from {sub.host.hostname} as root\n{{"who": "ops"}}'
        assert sub.stderr == "oops\n"
        moves = list(TaskEvent.objects.filter(subtask=sub).order_by("seq")
                     .values_list("from_status", "to_status"))
        assert moves == [("pending", "queued"), ("queued", "running"), ("running", "success")]
    assert not glob.glob(f"/tmp/ccs-{Task.objects.get(pk=task_id).uid}*"), "job directory left"


def test_an_unknown_or_changed_host_key_is_refused_with_the_reason(api, workers, sshd, builtins):
    changed, = ssh_hosts(sshd, 1, prefix="changed", host_key=other_host_key())
    unknown, = ssh_hosts(sshd, 1, prefix="unknown", host_key="")
    plugin_approved("ssh-hello", HELLO)
    subtasks = _finished(_task(api, "ssh-hello", hosts=[changed.hostname, unknown.hostname]))
    reasons = {sub.host.hostname: (sub.status, sub.reason) for sub in subtasks}
    status, reason = reasons[changed.hostname]
    assert status == "failed" and reason.startswith("refused over ssh: host key mismatch"), reason
    status, reason = reasons[unknown.hostname]
    assert status == "failed" and reason.startswith("refused over ssh: unknown host key"), reason


def test_a_host_key_of_another_type_is_asked_for_by_its_type(api, workers, sshd, builtins):
    ssh_hosts(sshd, 1, prefix="ecdsa", host_key=sshd.ecdsa_key)
    plugin_approved("ssh-hello", HELLO)
    sub, = _finished(_task(api, "ssh-hello", params={"who": "ecdsa"}))
    assert sub.status == "success", sub.reason


@pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo is not installed")
def test_run_as_another_account_goes_through_sudo(api, workers, sshd, builtins):
    ssh_hosts(sshd, 1)
    body = 'id -un\necho "$HOME"\nls -ld . | cut -d" " -f1,3\n'
    plugin_approved("ssh-whoami", body, run_as=("root", "nobody"))
    sub, = _finished(_task(api, "ssh-whoami", run_as="nobody"))
    assert (sub.status, sub.stdout) == ("success", "nobody\n/nonexistent\ndrwx------ nobody\n")


def test_timeout_kills_the_remote_process_group(api, workers, sshd, builtins):
    marker = f"ccs-marker-{uuid.uuid4().hex}"
    ssh_hosts(sshd, 1)
    plugin_approved("ssh-sleeper", _sleeper(marker))
    task_id = _task(api, "ssh-sleeper", timeout=2)
    pgid = next(iter(_until(lambda: _marked(marker), "never ran").values()))[0]
    sub, = _finished(task_id)
    assert (sub.status, sub.exit_code, sub.reason) == ("timeout", None, "timed out after 2 s")
    assert sub.stdout == "started\n"
    assert _marked(marker) == {} and _group(pgid) == []


def test_pause_resume_and_stop_act_on_the_remote_process_group(api, workers, sshd, builtins):
    marker = f"ccs-marker-{uuid.uuid4().hex}"
    ssh_hosts(sshd, 1)
    plugin_approved("ssh-sleeper", _sleeper(marker))
    task_id = _task(api, "ssh-sleeper", timeout=60)
    _until(lambda: len(_marked(marker)) == 2, "never ran")
    pgid = next(iter(_marked(marker).values()))[0]
    sub = SubTask.objects.get(task_id=task_id)

    assert api.post(f"/api/v1/subtasks/{sub.pk}/pause/").status_code == 202
    _until(lambda: SubTask.objects.get(pk=sub.pk).status == "paused", "not paused")
    assert set(_group(pgid)) == {"T"}
    assert api.post(f"/api/v1/subtasks/{sub.pk}/resume/").status_code == 202
    _until(lambda: SubTask.objects.get(pk=sub.pk).status == "running", "not resumed")
    _until(lambda: "T" not in _group(pgid), "still frozen")

    assert api.post(f"/api/v1/tasks/{task_id}/stop/").status_code in (200, 202)
    sub, = _finished(task_id)
    assert (sub.status, sub.reason, sub.stdout) == ("stopped", "stopped by operator", "started\n")
    assert _marked(marker) == {} and _group(pgid) == []
