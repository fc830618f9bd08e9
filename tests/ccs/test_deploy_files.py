"""The Procfile and docker-compose.yml describe the same processes; the routing table covers
every Celery task; bad settings fail at start naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from ccs import routing
from ccs.celery import app
from ccs.stack import WORKER_PROCESSES, procfile_entries

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_every_procfile_process_with_the_same_queues():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    procfile = procfile_entries()
    assert set(procfile) <= set(compose)
    for name, command in procfile.items():
        if " worker " in command:
            queues = command.split(" -Q ")[1].split()[0]
            assert f"-Q {queues} " in compose[name]["command"], name
    assert set(WORKER_PROCESSES) <= set(procfile)


def test_every_celery_task_has_a_route():
    app.loader.import_default_modules()
    ours = [name for name in app.tasks if name.startswith("ccs.")]
    assert len(ours) >= 9
    for name in ours:
        kwargs = {"datacenter": "dc1", "priority": "normal"}
        assert routing.route_task(name, (), kwargs, {}) is not None, name


def test_shard_routes_by_datacenter_and_priority():
    route = routing.route_task
    assert route(routing.TASK_RUN_SHARD, (), {"datacenter": "bj", "priority": "high"}, {}) == {
        "queue": "dc.bj.high"
    }
    assert route(routing.TASK_RUN_SHARD, (), {"datacenter": "bj"}, {}) == {"queue": "dc.bj"}
    assert route(routing.TASK_HOST_CONTROL, (), {"datacenter": "bj"}, {}) == {
        "queue": "dc.bj.control"
    }


def test_bad_settings_fail_at_start_naming_the_variable():
    env = {**os.environ, "CCS_SHARD_SIZE": "lots"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (
        "ccs: configuration error: CCS_SHARD_SIZE must be an integer, got 'lots'\n"
    )
    worker = subprocess.run([sys.executable, "-m", "celery", "-A", "ccs", "inspect", "ping"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert worker.returncode == 2 and "Traceback" not in worker.stderr
    assert "CCS_SHARD_SIZE" in worker.stderr
