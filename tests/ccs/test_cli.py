"""The `ccs` command line as an operator runs it: the installed entry point, in a
pseudo-terminal and piped, against the live stack (web, Celery workers, an agent fleet)."""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from ccs.cli import parser
from jobs.services import schedule_create
from permissions.models import Host
from permissions.services import node_ensure
from tasks.models import Task
from tests.factories import Fleet, free_port, hosts_make, plugin_approved

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
CCS = str(Path(sys.executable).parent / "ccs")
ESC = "\x1b["
# Hosts t001 and t002 fail with a message on stderr; t003 sleeps past the task's timeout.
FLAKY = ('case "$CCS_HOST_ID" in *t001|*t002) echo "disk full" >&2; exit 1;; '
         '*t003) sleep "${CCS_PARAM_NAP:-0}";; esac\necho ok\n')


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def stack(live_server, workers, builtins, tmp_path):
    """The web server, the workers and ten agent hosts; an operator with a token."""
    port = free_port()
    fleet = Fleet(tmp_path, hosts_make("dc1", 10, port), port)
    user = get_user_model().objects.create_superuser("ops", password="s3cret")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "xterm",
           "CCS_URL": live_server.url, "CCS_TOKEN": Token.objects.create(user=user).key}
    yield env
    fleet.stop()


def ccs(env: dict, *args: str, tty: bool = False, stdin: str = "", timeout: float = 90) -> Ran:
    """Run the real `ccs` entry point; with `tty`, its stdout is a pseudo-terminal."""
    if not tty:
        done = subprocess.run([CCS, *args], env=env, input=stdin, capture_output=True, text=True,
                              timeout=timeout)
        return Ran(done.returncode, done.stdout, done.stderr)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    proc = subprocess.Popen([CCS, *args], env=env, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=10)
    return Ran(code, b"".join(chunks).decode(), proc.stderr.read().decode())


def _started(out: str) -> int:
    return int(re.search(r"task (\d+)", out).group(1))


def test_login_prints_export_lines_and_logout_revokes_the_token(stack):
    env = {k: v for k, v in stack.items() if k != "CCS_TOKEN"}
    env["CCS_URL"] = stack["CCS_URL"] + "/api/v1/"  # pasted with the API's path: still works
    login = ccs(env, "login", "ops", "--password-stdin", stdin="s3cret\n")
    assert login.code == 0, login.err
    exported = dict(re.findall(r"^export (CCS_\w+)=(\S+)$", login.out, re.M))
    assert exported["CCS_URL"] == stack["CCS_URL"] and len(exported["CCS_TOKEN"]) == 40
    as_json = json.loads(ccs(env, "login", "ops", "--json", "--password-stdin",
                             stdin="s3cret\n").out)
    assert as_json == {"url": stack["CCS_URL"], "token": exported["CCS_TOKEN"]}
    env.update(exported)
    assert ccs(env, "tasks").code == 0
    logout = ccs(env, "logout")
    assert (logout.code, logout.out) == (0, "unset CCS_TOKEN\n")
    refused = ccs(env, "tasks")
    assert refused.code == 5 and "Invalid token" in refused.err
    bad = ccs(env, "login", "ops", "--password-stdin", stdin="wrong\n")
    assert bad.code == 5 and bad.err.count("Unable to log in") == 1


def test_run_follow_piped_succeeds_with_plain_progress_and_summary(stack):
    ran = ccs(stack, "run", "ping", "--node", "corp/test", "--as", "root", "--follow")
    assert ran.code == 0, ran.out + ran.err
    assert ESC not in ran.out and "\r" not in ran.out  # plain text when piped
    progress = [line for line in ran.out.splitlines() if "hosts/s" in line]
    assert progress and "10/10 succeeded" in progress[-1] and "10 success" in progress[-1]
    assert re.search(r"task \d+ succeeded: ping v1 on 10 hosts in [\d.]+ s", ran.out)
    assert re.search(r"^\s+10 hosts\s+success\s+exit 0\s+'pong'", ran.out, re.M)
    assert Task.objects.get(pk=_started(ran.out)).status == "succeeded"


def test_run_plan_says_what_would_happen_and_starts_nothing(stack):
    Host.objects.filter(hostname="dc1-t004").update(status=Host.Status.OFFLINE)
    ran = ccs(stack, "run", "ping", "--node", "corp/test", "--as", "root", "--batches",
              "1,50%,100%", "--plan")
    assert ran.code == 0, ran.out + ran.err
    assert ran.out.splitlines()[:4] == [
        "plan: ping v1 as root on 10 hosts: would start", "  dc1: 10 hosts",
        "  batches: 1, 5, 4", "  1 offline at the last probe: dc1-t004",
    ]
    as_json = json.loads(ccs(stack, "run", "ping", "--host", "dc1-t000", "--as", "root",
                             "--plan", "--json").out)
    assert (as_json["total_hosts"], as_json["allowed"]) == (1, True)
    refused = ccs(stack, "run", "ping", "--node", "corp/nowhere", "--as", "root", "--plan")
    assert refused.code == 5 and "unknown node: corp/nowhere" in refused.err
    assert not Task.objects.exists()


LAUNCH_FIELDS = ("plugin_version", "params", "run_as", "timeout", "priority", "concurrency",
                 "batches", "failure_threshold", "auto_resume", "task_type", "total_hosts",
                 "callback_url", "creator")


def test_a_saved_job_run_makes_the_task_ccs_run_makes(stack):
    options = ["ping", "--node", "corp/test", "--host", "dc1-t000", "--as", "root",
               "--batches", "2,100%", "--auto-resume", "1", "--concurrency", "3",
               "--timeout", "20", "--failure-threshold", "50%", "--priority", "high"]
    ran = ccs(stack, "run", *options, "--follow")
    assert ran.code == 0, ran.out + ran.err
    saved = ccs(stack, "job", "create", "ping-test", *options, "--description", "all of test")
    assert saved.code == 0, saved.err
    assert re.fullmatch(r"saved job \d+: ping-test \(ping\); run it with: ccs job run "
                        r"ping-test\n", saved.out)
    from_job = ccs(stack, "job", "run", "ping-test", "--follow")
    assert from_job.code == 0, from_job.out + from_job.err
    assert "(saved job ping-test)" in from_job.out
    adhoc, job_task = (Task.objects.get(pk=_started(r.out)) for r in (ran, from_job))
    for name in LAUNCH_FIELDS:
        assert getattr(adhoc, name) == getattr(job_task, name), name
    hosts = [set(t.subtasks.values_list("host_id", flat=True)) for t in (adhoc, job_task)]
    assert hosts[0] == hosts[1] and len(hosts[0]) == 10
    listed = ccs(stack, "job", "list")
    assert re.search(r"^\d+\s+ping-test\s+ping \(newest\)\s+corp/test,dc1-t000\s+ops\s+"
                     r"all of test$", listed.out, re.M), listed.out
    schedule_create(actor=job_task.creator, job_id=job_task.job_run.job_id, cron="0 3 * * *",
                    timezone_name="Asia/Shanghai")
    shown = ccs(stack, "job", "show", "ping-test")
    assert re.search(r"^  schedule \d+: cron '0 3 \* \* \*' \(Asia/Shanghai\), next "
                     r"\S+T19:00:00Z, as ops$", shown.out, re.M), shown.out
    assert re.search(rf"^{job_task.pk}\s+succeeded\s+1\s+manual\s+ops\s+10\s", shown.out,
                     re.M), shown.out
    assert ccs(stack, "job", "delete", "ping-test").out == "deleted saved job ping-test\n"
    gone = ccs(stack, "job", "show", "ping-test")
    assert gone.code == 5 and "no saved job named 'ping-test'" in gone.err


def test_failures_and_timeouts_fail_the_command_on_a_terminal(stack):
    plugin_approved("flaky", FLAKY)
    ran = ccs(stack, "run", "flaky", "--node", "corp/test", "--as", "root", "--param", "nap=5",
              "--timeout", "1", "--follow", tty=True)
    assert ran.code == 1, ran.out + ran.err
    assert "\r\x1b[2K[" in ran.out  # the progress line, redrawn in place with its bar
    assert f"{ESC}31m2 failed" in ran.out and f"{ESC}33m1 timeout" in ran.out
    assert re.search(r"task \d+ .*failed.*: flaky v1 on 10 hosts", ran.out)
    assert re.search(r"2 hosts\s+.*failed.*exit 1\s+'disk full'", ran.out)
    task_id = _started(ran.out)
    assert f"re-run the failed hosts: ccs rerun {task_id}" in ran.out
    rerun = ccs(stack, "rerun", str(task_id), "--failed", "--json", "--follow")
    assert rerun.code == 1, rerun.err  # the same hosts fail again
    again = json.loads(rerun.out)["task"]
    assert again["total_hosts"] == 3 and again["plugin"] == "flaky"
    assert again["counts"] == {"failed": 2, "timeout": 1}


def test_verbose_shows_each_host_and_why_it_failed(stack):
    plugin_approved("flaky", FLAKY)
    ran = ccs(stack, "run", "flaky", "--node", "corp/test", "--as", "root", "--follow", "-v")
    assert ran.code == 1
    assert re.search(r"^dc1-t001  running → failed  exit 1: disk full$", ran.out, re.M)
    assert re.search(r"^dc1-t000  queued → running$", ran.out, re.M)
    assert len(re.findall(r"→ success  exit 0$", ran.out, re.M)) == 8


def test_a_pause_point_says_why_and_how_to_resume(stack):
    proc = subprocess.Popen([CCS, "run", "ping", "--node", "corp/test", "--as", "root",
                             "--batches", "1,100%", "--follow"], env=stack,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.monotonic() + 60
    while not any("Resume with" in line for line in seen):
        assert time.monotonic() < deadline, seen
        seen.append(proc.stdout.readline())
    task_id = _started(seen[0])
    assert (f"task {task_id} paused: pause point: batch 1 of 2 done (1 of 10 hosts). "
            f"Resume with: ccs resume {task_id}\n") in seen
    resumed = ccs(stack, "resume", str(task_id))
    assert resumed.code == 0 and f"task {task_id}: running" in resumed.out
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "10/10 succeeded" in out


def test_watch_exits_3_once_a_stop_is_confirmed(stack):
    plugin_approved("nap", 'sleep "${CCS_PARAM_SECONDS:-30}"\n')
    started = ccs(stack, "run", "nap", "--node", "corp/test", "--as", "root")
    task_id = _started(started.out)
    deadline = time.monotonic() + 30
    while not Task.objects.get(pk=task_id).started_at:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    watch = subprocess.Popen([CCS, "watch", str(task_id)], env=stack, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stopped = ccs(stack, "stop", str(task_id))
    assert stopped.code == 0 and re.search(r"stopping \(\d+ hosts still confirming\)|stopped",
                                           stopped.out), stopped.out
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 3, out + err
    assert f"task {task_id} stopped" in out


def test_json_everywhere_parses_back(stack):
    ran = ccs(stack, "run", "ping", "--host", "dc1-t004", "--as", "root", "--follow", "--json")
    assert ran.code == 0, ran.err
    followed = json.loads(ran.out)
    assert followed["task"]["status"] == "succeeded"
    assert followed["summary"]["groups"][0]["hosts"] == ["dc1-t004"]
    assert "hosts/s" in ran.err  # progress goes to stderr, JSON alone on stdout
    task_id = str(followed["task"]["id"])
    assert json.loads(ccs(stack, "show", task_id, "--json").out)["counts"] == {"success": 1}
    assert json.loads(ccs(stack, "summary", task_id, "--json").out)["total"] == 1
    assert [t["id"] for t in json.loads(ccs(stack, "tasks", "--json").out)] == [int(task_id)]
    assert len(json.loads(ccs(stack, "hosts", "--json").out)) == 10
    assert "ping" in [p["name"] for p in json.loads(ccs(stack, "--json", "plugins").out)]


def test_lists_filter(stack):
    hosts_make("dc2", 2, port=1, node_path="corp/other")
    ccs(stack, "run", "ping", "--host", "dc1-t000", "--as", "root", "--follow")
    plugin_approved("flaky", FLAKY)
    ccs(stack, "run", "flaky", "--host", "dc1-t001", "--as", "root", "--follow")
    failed = ccs(stack, "tasks", "--status", "failed")
    assert failed.code == 0 and "flaky v1" in failed.out and "ping v1" not in failed.out
    assert "flaky" not in ccs(stack, "tasks", "--plugin", "ping").out
    hosts = ccs(stack, "hosts", "--datacenter", "dc2").out
    assert "dc2-t000" in hosts and "dc1-t000" not in hosts
    assert ccs(stack, "hosts", "--node", "corp/other").out.count("dc2-t") == 2
    assert "flaky" in ccs(stack, "plugins", "--name", "flaky").out
    assert "sysinfo" not in ccs(stack, "plugins", "--name", "flaky").out


@pytest.mark.parametrize(("args", "words"), [
    (("run", "ping", "--as", "root", "--batches", "10,x"), "batch 2: 'x' is neither"),
    (("run", "ping", "--as", "root", "--failure-threshold", "abc"), "'abc' is neither"),
    (("run", "ping", "--as", "root", "--param", "oops"), "expected NAME=VALUE"),
    (("show", "abc"), "'abc' is not a whole number"),
    (("pause",), "give a task id or --subtask ID"),
    (("tasks", "--status", "finished"), "invalid choice: 'finished'"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_get_one_line_and_exit_2(args, words):
    ran = ccs({"PATH": os.environ["PATH"]}, *args)
    assert ran.code == 2
    assert words in ran.err and ran.err.count("\n") == 1 and "Traceback" not in ran.err


def test_server_refusals_are_printed_once_and_name_what_is_wrong(stack):
    missing = ccs(stack, "show", "9999")
    assert (missing.code, missing.err) == (5, "ccs: no task 9999 (or you may not see it)\n")
    refused = ccs(stack, "run", "ping", "--node", "corp/x", "--as", "root")
    assert refused.code == 5 and refused.err == "ccs: target.nodes: unknown node: corp/x\n"
    unknown = ccs(stack, "run", "nope", "--node", "corp/test", "--as", "root")
    assert unknown.err.count("unknown plugin: nope") == 1
    elsewhere = ccs({**stack, "CCS_URL": stack["CCS_URL"] + "/elsewhere"}, "tasks")
    assert elsewhere.code == 5 and "is --url (CCS_URL) a CCS server?" in elsewhere.err
    down = ccs({**stack, "CCS_URL": f"http://127.0.0.1:{free_port()}"}, "tasks")
    assert down.code == 5 and "cannot reach" in down.err
    no_token = ccs({k: v for k, v in stack.items() if k != "CCS_TOKEN"}, "tasks")
    assert no_token.code == 2 and "no token" in no_token.err
    assert Task.objects.count() == 0


def test_every_command_and_option_has_help():
    top = parser()
    commands = top._subparsers._group_actions[0].choices
    assert {"login", "logout", "run", "show", "summary", "watch", "tasks", "plugins", "hosts",
            "pause", "resume", "stop", "rerun", "job"} <= set(commands)
    verbs = commands["job"]._subparsers._group_actions[0].choices
    assert {"create", "list", "show", "run", "delete"} <= set(verbs)
    for name, command in [*commands.items(), *((f"job {v}", p) for v, p in verbs.items())]:
        assert command.description, name
        for action in command._actions:
            assert action.help, f"ccs {name} {action.dest}"
    ran = ccs({"PATH": os.environ["PATH"]}, "run", "--help")
    assert ran.code == 0 and "--failure-threshold N|N%" in ran.out and "exit codes:" in ran.out


def test_the_readme_command_lines_work_when_pasted(stack, tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"## Command line.*?```sh\n(.*?)```", readme, re.S).group(1)
    first = "\n".join(block.splitlines()[:3])  # set up, log in, run and follow
    get_user_model().objects.create_superuser("admin", password="s3cret")
    demo = node_ensure(path="corp/demo/web/dc1")
    for host in Host.objects.all():  # the fleet's hosts, as the demo seeds them
        host.nodes.add(demo)
    env = {**stack, "CCS_PASSWORD": "s3cret"}
    env.pop("CCS_TOKEN")
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c",
                          first.replace("http://127.0.0.1:8000", stack["CCS_URL"])],
                         cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "paused: pause point: batch 1 of 3 done" in ran.stdout
    assert "(or it resumes by itself 2 s after the pause point)" in ran.stdout
    assert re.search(r"task \d+ succeeded: ping v1 on 10 hosts", ran.stdout)
