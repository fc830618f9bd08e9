"""schemathesis against the running stack (the Procfile's web server, the Celery workers, an
agent fleet): every operation, a bounded number of cases, no server error, every answer as the
schema documents it. CCS_FUZZ_EXAMPLES raises the bound for a larger run; CCS_FUZZ_OUTPUT
names a directory that keeps each run's report."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authtoken.models import Token

from ccs.stack import Stack, free_port, port_open, wait_for
from permissions.models import Node
from plugins.models import PluginVersion
from tasks.models import SubTask, Task
from tasks.services import sitter_run, task_create, task_stop
from tasks.services.create import ControlData
from tasks.states import FINAL, TASK_ACTIVE, TASK_FINAL
from tests.factories import Fleet, hosts_make, plugin_approved

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
HERE = Path(__file__).parent
ST = str(Path(sys.executable).parent / "st")
EXAMPLES = os.environ.get("CCS_FUZZ_EXAMPLES", "10")
SEED = os.environ.get("CCS_FUZZ_SEED", "13")
# Each {id} of a path names an object the run may read, change and act on.
IDS = {"tasks": "TASK", "subtasks": "SUBTASK", "nodes": "NODE", "plugins": "PLUGIN",
       "plugin-versions": "VERSION", "hosts": "HOST", "datacenters": "DATACENTER"}


@pytest.fixture
def web(workers, builtins, tmp_path):
    """The Procfile's web server on the test database, with ten agent hosts behind it."""
    db = connection.settings_dict
    port = free_port()
    env = {**workers.env, "CCS_WEB_PORT": str(port),
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    stack = Stack(env=env, log_dir=tmp_path / "log")
    proc = stack.start("web")
    fleet_port = free_port()
    fleet = Fleet(tmp_path, hosts_make("dc1", 10, fleet_port), fleet_port)
    try:
        wait_for(lambda: port_open(port), "web", proc=proc)
        yield f"http://127.0.0.1:{port}"
        _end_every_task()
    finally:
        stack.stop()
        fleet.stop()


def _end_every_task() -> None:
    """Stop what the run left going, so the database is quiet before the test's flush."""
    admin = get_user_model().objects.get(username="fuzzer")
    for task_id in Task.objects.filter(status__in=TASK_ACTIVE).values_list("id", flat=True):
        task_stop(actor=admin, task_id=task_id)
    deadline = time.monotonic() + 120
    while going := list(Task.objects.exclude(status__in=TASK_FINAL).values_list("id", "status")):
        left = SubTask.objects.filter(task_id__in=[t for t, _ in going]).exclude(
            status__in=FINAL).values_list("task_id", "status", "started_at")
        assert time.monotonic() < deadline, f"tasks did not end: {going}; {list(left)}"
        sitter_run()  # as the sitter does: a job frozen past its worker's wait is pulled
        time.sleep(2)


def _objects() -> dict[str, str]:
    """A user, a task that ran, and a plugin of its own to review and retire. The built-in
    `sleep` is retired: jobs stay short, so whatever the run starts ends soon after."""
    user = get_user_model().objects.create_superuser("fuzzer", password="pw")
    PluginVersion.objects.filter(plugin__name="sleep").update(status="retired")
    version = plugin_approved("fuzzed", "echo fuzzed\n")
    task = task_create(actor=user, plugin="ping", version=None, params={}, nodes=["corp/test"],
                       hosts=[], run_as="root", control=ControlData())
    deadline = time.monotonic() + 30
    while Task.objects.get(pk=task.pk).status not in TASK_FINAL:
        assert time.monotonic() < deadline, "the task did not run"
        time.sleep(0.1)
    subtask = SubTask.objects.filter(task=task).first()
    return {
        "CCS_ST_TOKEN": Token.objects.create(user=user).key, "CCS_ST_TASK": str(task.pk),
        "CCS_ST_SUBTASK": str(subtask.pk), "CCS_ST_NODE": str(Node.objects.get(path="corp").pk),
        "CCS_ST_PLUGIN": str(version.plugin_id), "CCS_ST_VERSION": str(version.pk),
        "CCS_ST_HOST": str(subtask.host_id), "CCS_ST_DATACENTER": str(subtask.datacenter_id),
    }


def _config(tmp_path: Path, with_ids: bool) -> Path:
    text = (HERE / "schemathesis.toml").read_text()
    if with_ids:
        for resource, name in IDS.items():
            text += (f'\n[[operations]]\ninclude-path-regex = "^/api/v1/{resource}/\\\\{{id\\\\}}/"'
                     f'\nparameters = {{ "path.id" = "${{CCS_ST_{name}}}" }}\n')
    path = tmp_path / ("ids.toml" if with_ids else "random.toml")
    path.write_text(text)
    return path


def _schemathesis(web: str, config: Path, mode: str, env: dict) -> subprocess.CompletedProcess:
    ran = subprocess.run(
        [ST, "--config-file", str(config), "run", f"{web}/api/v1/schema/", "--checks", "all",
         "--mode", mode, "--max-examples", EXAMPLES, "--seed", SEED, "--workers", "1",
         "--no-color"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=3600,
    )
    if keep := os.environ.get("CCS_FUZZ_OUTPUT"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"schemathesis-{config.stem}.txt").write_text(ran.stdout + ran.stderr)
    return ran


def test_every_operation_on_real_objects_answers_as_documented(web, tmp_path):
    env = _objects()
    ran = _schemathesis(web, _config(tmp_path, with_ids=True), "positive", env)
    assert ran.returncode == 0, ran.stdout[-20000:] + ran.stderr[-5000:]
    selected, total = map(int, re.search(r"Selected: (\d+)/(\d+)", ran.stdout).groups())
    assert selected == total - 1 >= 43  # all but logging out


def test_every_operation_on_generated_input_answers_as_documented(web, tmp_path):
    env = _objects()
    ran = _schemathesis(web, _config(tmp_path, with_ids=False), "all", env)
    assert ran.returncode == 0, ran.stdout[-20000:] + ran.stderr[-5000:]
