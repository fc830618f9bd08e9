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
    assert set(ours) == {v for k, v in vars(routing).items() if k.startswith("TASK_")}
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


def test_make_up_prints_lines_that_set_up_the_cli_when_pasted():
    from tasks.management.commands.demo import up_text

    text = up_text("http://127.0.0.1:40123", "http://127.0.0.1:40124/", "s3cr'et")
    assert "export CCS_URL=http://127.0.0.1:40123 " in text
    script = "\n".join(line.strip() for line in text.splitlines()
                       if line.strip().startswith(("export ", "eval ")))
    shown = subprocess.run(["bash", "-c", script.replace("eval ", "echo ") + "\necho $CCS_URL"],
                           capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert shown.returncode == 0, shown.stderr
    assert "CCS_PASSWORD='s3cr'\"'\"'et' ccs login admin" in text
    assert shown.stdout.splitlines()[-1] == "http://127.0.0.1:40123"


def test_the_system_script_names_what_a_bare_machine_lacks(tmp_path):
    """Run with a PATH holding only a shell's basics: every package is named, nothing run."""
    for tool in ("bash", "env", "cat", "id", "seq", "sort", "tail", "ls", "sed", "dirname",
                 "basename", "mkdir"):
        (tmp_path / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    (tmp_path / "python3").symlink_to("/usr/bin/python3")
    env = {"PATH": str(tmp_path), "CCS_SBIN": "", "CCS_SYSTEM_PYTHON": "/nonexistent",
           "CCS_SYSTEM_DRY_RUN": "1"}
    ran = subprocess.run(["bash", str(ROOT / "scripts/system.sh"), "test",
                          "postgres://postgres@127.0.0.1:1/ccs", "redis://localhost:2/15",
                          "amqp://guest:guest@127.0.0.1:3/"],
                         env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.splitlines() == [
        "system: would install: redis-server postgresql openssh-server sudo chromium strace "
        "dnsmasq-base rabbitmq-server iproute2 python3-cryptography",
        "system: would start PostgreSQL on 127.0.0.1:1",
        "system: would start Redis on localhost:2",
        "system: would start RabbitMQ on 127.0.0.1:3",
    ]
    demo = subprocess.run(["bash", str(ROOT / "scripts/system.sh"), "demo"], env=env,
                          capture_output=True, text=True)
    assert demo.stderr == "system: would install: redis-server\n"
    remote = subprocess.run(["bash", str(ROOT / "scripts/system.sh"), "test",
                             "postgres://u@db.example:5432/ccs", "redis://cache.example/0",
                             "amqp://u:p@mq.example/"],
                            env=env, capture_output=True, text=True)
    assert "would start" not in remote.stderr  # services elsewhere are not ours to start


def test_ci_is_little_more_than_make_test():
    lines = [line for line in (ROOT / ".ci/run").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[-1] == 'exec make test "$@"' and len(lines) <= 4


def test_every_compose_service_is_started_again_when_it_dies():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, service in compose.items():
        assert service.get("restart") == "unless-stopped", name


def test_the_systemd_unit_runs_a_procfile_process_and_restarts_it_for_ever():
    unit = (ROOT / "deploy/systemd/ccs@.service").read_text()
    lines = [line.strip() for line in unit.splitlines() if line and not line.startswith("#")]
    assert "Restart=always" in lines and "StartLimitIntervalSec=0" in lines
    assert "start %i" in next(line for line in lines if line.startswith("ExecStart="))
    target = ROOT / "deploy/systemd/ccs.target"
    assert "WantedBy=ccs.target" in lines and target.exists()
