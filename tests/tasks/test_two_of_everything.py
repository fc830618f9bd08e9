"""Two of everything side by side (controllers, beats, web servers, sitters, workers of a
datacenter, callbacks workers) do every piece of work once: database locks and unique rows
decide, not timing."""

import json
import os
import re
import signal
import socket

import httpx
import pytest
from celery import Celery
from django.conf import settings

from ccs.stack import ROOT, Stack, port_open, procfile_entries, wait_for
from tasks.models import BeatFiring, CallbackAttempt, Shard, SubTask, Task, TaskEvent
from tests.conftest import _on_test_database
from tests.factories import free_port, plugin_approved
from tests.tasks.test_callbacks import Receiver
from tests.tasks.test_liveness import _restart, _until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
LOGS = ROOT / "var" / "log"
# The second of each Celery worker the session's stack runs: (process, node name prefix).
SECONDS = (("controller", "controller"), ("worker-dc1", "dc1"),
           ("worker-dc1-high", "dc1-high"), ("callbacks", "callbacks"))
# A web server's first requests on a loaded two-core machine take seconds (imports, caches).
WEB_TIMEOUT = 60
CONTROLLERS, SITTERS, BEATS = ("controller", "controller-2"), ("sitter", "sitter-2"), (
    "beat-a", "beat-b")


def _lines(name: str, pattern: str, skip: int = 0) -> list[str]:
    """Lines of a process's log (after its first `skip` lines) that match."""
    path = LOGS / f"{name}.log"
    lines = path.read_text(errors="replace").splitlines()[skip:] if path.exists() else []
    return [line for line in lines if re.search(pattern, line)]


def _log_length(name: str) -> int:
    path = LOGS / f"{name}.log"
    return len(path.read_text(errors="replace").splitlines()) if path.exists() else 0


@pytest.fixture
def seconds(workers, tmp_path):
    """Beside the session's stack: a second controller, dc1 worker, dc1 control worker,
    callbacks worker and sitter; two beats (probing every 2 s) and two web servers. Yields
    the stack, the two web servers' URLs, and how long each controller's and sitter's log was
    before."""
    skip = {name: _log_length(name) for name in (*CONTROLLERS, *SITTERS)}
    stack = Stack(env={**_on_test_database(), "CCS_PROBE_INTERVAL": "2"})
    entries, host = procfile_entries(), socket.gethostname()
    for process, node in SECONDS:
        stack.start(f"{process}-2", entries[process].replace(f"-n {node}@", f"-n {node}-2@"))
    stack.start("sitter-2", entries["sitter"])
    for name in BEATS:
        LOGS.joinpath(f"{name}.log").unlink(missing_ok=True)
        stack.start(name, entries["beat"].replace("var/celerybeat-schedule",
                                                  str(tmp_path / name)))
    webs = []
    for name in ("web-a", "web-b"):
        port = free_port()
        stack.env["CCS_WEB_PORT"] = str(port)
        stack.start(name, entries["web"])
        webs.append((port, f"http://127.0.0.1:{port}"))
    try:
        expected = {f"{node}-2@{host}" for _, node in SECONDS}
        app = Celery(broker=settings.CELERY_BROKER_URL)
        wait_for(lambda: expected <= {n for r in app.control.ping(timeout=1.0) for n in r},
                 "the second workers", 90)
        for port, _ in webs:
            wait_for(lambda p=port: port_open(p), "web", 60)
        yield stack, [url for _, url in webs], skip
    finally:
        stack.stop()


def _to_the_end(web: str, auth: dict, task_id: int, receiver, timeout: float) -> list[dict]:
    """The task's transitions followed on `web` to the stream's end; then the task has
    succeeded and its 30 events have reached the callback receiver."""
    with httpx.stream("GET", f"{web}/api/v1/tasks/{task_id}/events/",
                      headers={**auth, "Accept": "text/event-stream", "Last-Event-ID": "0"},
                      timeout=timeout) as stream:
        streamed = _transitions(stream.iter_lines())
    _until(lambda: Task.objects.get(pk=task_id).status == "succeeded", "task", 60)
    _until(lambda: {e["seq"] for _, b in receiver.posts for e in json.loads(b)}
           == set(range(1, 31)), "callbacks", 60)
    return streamed


def test_two_of_everything_do_each_piece_of_work_once(admin, seconds, fleet, tmp_path):
    stack, (web_a, web_b), skip = seconds
    runs = tmp_path / "runs"
    plugin_approved("nap-log", f'echo "$CCS_JOB_ID" >> {runs}\nsleep 1\necho done\n')
    receiver = Receiver(free_port())
    token = httpx.post(f"{web_a}/api/v1/auth/token/", timeout=WEB_TIMEOUT,
                       json={"username": admin.username, "password": "pw"}).json()["token"]
    auth = {"Authorization": f"Token {token}"}
    created = httpx.post(f"{web_a}/api/v1/tasks/", headers=auth, timeout=WEB_TIMEOUT, json={
        "plugin": "nap-log", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
        "control": {"batches": [2, "100%"], "auto_resume": 2},
        "callback_url": f"http://127.0.0.1:{receiver.port}/hook",
    })
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    try:
        # followed on the other web server, to its end
        streamed = _to_the_end(web_b, auth, task_id, receiver, timeout=90)
    finally:
        receiver.stop()
    for name in BEATS:
        stack.procs[name].terminate()
        stack.procs[name].wait()
    sent = sum(len(_lines(name, "Sending due task hosts-probe")) for name in BEATS)
    _until(lambda: _probes(skip) == sent, "every probe sent was run", 30)

    seqs = list(TaskEvent.objects.filter(task_id=task_id).order_by("seq")
                .values_list("seq", flat=True))
    assert seqs == list(range(1, 31)) == [e["seq"] for e in streamed]
    moves = sorted(TaskEvent.objects.filter(task_id=task_id).values_list("subtask_id",
                                                                          "to_status"))
    subtasks = SubTask.objects.filter(task_id=task_id).values_list("id", flat=True)
    # released once, started once, ended once
    assert moves == sorted((s, to) for s in subtasks for to in ("queued", "running", "success"))
    job_ids = runs.read_text().split()
    assert len(job_ids) == 10 == len(set(job_ids))  # each job ran once, on the agent
    resumes = sum(len(_lines(n, f"task {task_id}: auto-resumed", skip[n])) for n in SITTERS)
    assert resumes == 1
    delivered = [e["seq"] for _, body in receiver.posts for e in json.loads(body)]
    assert sorted(delivered) == list(range(1, 31))  # each event once
    deliveries = [headers["ccs-delivery"] for headers, _ in receiver.posts]
    assert len(set(deliveries)) == len(deliveries) == CallbackAttempt.objects.filter(
        task_id=task_id).count()
    firings = BeatFiring.objects.filter(entry="hosts-probe").count()
    assert sent == firings >= 2  # each period's probe sent by one beat of the two
    print(f"two of everything: {firings} probe periods, each sent once and run once; "
          f"1 auto-resume; {len(deliveries)} callback POSTs, each event once")


def _transitions(lines) -> list[dict]:
    """The transition events of an event stream, in order."""
    events, kind = [], ""
    for line in lines:
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and kind == "transition":
            events.append(json.loads(line.split(":", 1)[1]))
    return events


def _probes(skip: dict[str, int]) -> int:
    return sum(len(_lines(n, r"hosts_probe_plan\[.*\] received", skip[n]))
               for n in CONTROLLERS)


def test_kill_one_of_each_and_the_work_goes_on(admin, seconds, workers, fleet, tmp_path):
    """Mid-task, kill -9 the dc1 worker running the shard, one controller, one callbacks
    worker, the session's sitter, one beat and the web server the task was made on: the
    task ends, each job having run once, every event streamed and delivered."""
    stack, (web_a, web_b), _ = seconds
    runs = tmp_path / "runs"
    plugin_approved("nap-log", f'echo "$CCS_JOB_ID" >> {runs}\nsleep 3\necho done\n')
    receiver = Receiver(free_port(), hold_first=3)
    token = httpx.post(f"{web_a}/api/v1/auth/token/", timeout=WEB_TIMEOUT,
                       json={"username": admin.username, "password": "pw"}).json()["token"]
    auth = {"Authorization": f"Token {token}"}
    task_id = httpx.post(f"{web_a}/api/v1/tasks/", headers=auth, timeout=WEB_TIMEOUT, json={
        "plugin": "nap-log", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
        "control": {"batches": [2, "100%"], "auto_resume": 2},
        "callback_url": f"http://127.0.0.1:{receiver.port}/hook",
    }).json()["id"]
    _until(lambda: Shard.objects.filter(task_id=task_id, state="running").exists(),
           "no shard running", 60)
    holder = Shard.objects.get(task_id=task_id, state="running").worker.split("@")[0]
    dc1 = {"dc1": (workers, "worker-dc1"), "dc1-2": (stack, "worker-dc1-2")}[holder]
    killed = [dc1, (stack, "controller-2"), (stack, "callbacks-2"), (workers, "sitter"),
              (stack, "beat-b"), (stack, "web-a")]
    try:
        for owner, name in killed:
            os.killpg(owner.procs[name].pid, signal.SIGKILL)
            owner.procs[name].wait()
        streamed = _to_the_end(web_b, auth, task_id, receiver, timeout=120)
    finally:
        receiver.stop()
        for owner, name in killed:
            if owner is workers:  # the session's stack goes on for the next tests
                _restart(workers, name)
    assert [e["seq"] for e in streamed] == list(range(1, 31))
    job_ids = runs.read_text().split()
    assert len(job_ids) == 10 == len(set(job_ids))  # each job ran once, on the agent
    assert SubTask.objects.filter(task_id=task_id, status="success").count() == 10
    print(f"killed {[name for _, name in killed]}: the task ended, every job once")
