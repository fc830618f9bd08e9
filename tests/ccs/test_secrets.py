"""Secrets: no start without a real Django secret key (unless DJANGO_DEBUG), every secret file
private (0600 in a 0700 var/), and Flower behind a password on loopback only."""

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from django.core.management import call_command

from ccs.keygen import ensure_secrets
from ccs.stack import Stack, free_port, port_open, procfile_entries, wait_for
from tests.factories import hosts_make

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("master.secret", "signing-key.pem", "django-secret-key", "admin-password",
           "flower-password")


def _check(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_SECRET_KEY")}
    clean.pop("DJANGO_DEBUG", None)
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("key", [None, "", "dev-only-insecure-key-change-me", "short",
                                 "django-insecure-" + "x" * 40])
def test_no_start_without_a_real_secret_key(tmp_path, key):
    env = {"CCS_VAR_DIR": str(tmp_path)}  # no var/django-secret-key there
    if key is not None:
        env["DJANGO_SECRET_KEY"] = key
    result = _check(env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("ccs: configuration error: DJANGO_SECRET_KEY")
    assert "Traceback" not in result.stderr


def test_the_key_comes_from_a_file_and_debug_may_do_without(tmp_path):
    var = ROOT / "var"
    secrets_env = {"CCS_CHANNEL_MASTER_SECRET_FILE": str(var / "master.secret"),
                   "CCS_SIGNING_KEY_FILE": str(var / "signing-key.pem")}
    key_file = tmp_path / "key"
    key_file.write_text("k" * 20 + "random-enough-for-a-test-0123456789\n")
    from_file = _check({"CCS_VAR_DIR": str(tmp_path), "DJANGO_SECRET_KEY_FILE": str(key_file),
                        **secrets_env})
    assert from_file.returncode == 0, from_file.stderr
    debug = _check({"CCS_VAR_DIR": str(tmp_path), "DJANGO_DEBUG": "1", **secrets_env})
    assert debug.returncode == 0, debug.stderr


def test_make_secrets_writes_every_secret_private(tmp_path):
    var = tmp_path / "var"
    written = ensure_secrets(var)
    assert sorted(p.name for p in written) == sorted(SECRETS)
    assert _mode(var) == 0o700
    assert {name: _mode(var / name) for name in SECRETS} == dict.fromkeys(SECRETS, 0o600)
    # a secret left readable by an older version is made private, not rewritten
    (var / "admin-password").chmod(0o644)
    before = (var / "admin-password").read_text()
    assert ensure_secrets(var) == []
    assert _mode(var / "admin-password") == 0o600
    assert (var / "admin-password").read_text() == before


@pytest.mark.django_db
def test_fleet_configs_hold_host_keys_and_are_private(builtins, tmp_path):
    hosts_make("dc1", 2, port=1)
    out = tmp_path / "fleet.json"
    out.write_text("{}")
    out.chmod(0o644)
    call_command("fleet_config", datacenter="dc1", listen="127.0.0.1:1", out=out, verbosity=0)
    assert _mode(out) == 0o600


def test_compose_publishes_flower_on_loopback_only_behind_a_password():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    for command in (compose["flower"]["command"], procfile_entries()["flower"]):
        assert "--conf=ccs/flowerconfig.py" in command


@pytest.mark.integration
def test_flower_answers_only_with_its_password(tmp_path):
    port = free_port()
    stack = Stack(log_dir=tmp_path)
    stack.env.update(CCS_FLOWER_PORT=str(port))
    stack.start("flower")
    try:
        wait_for(lambda: port_open(port), "flower", proc=stack.procs["flower"])
        url = f"http://127.0.0.1:{port}/api/workers"
        password = (ROOT / "var" / "flower-password").read_text().strip()
        deadline = time.monotonic() + 30
        while (anonymous := httpx.get(url)).status_code >= 500 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert anonymous.status_code == 401
        assert httpx.get(url, auth=("ccs", "wrong")).status_code == 401
        assert httpx.get(url, auth=("ccs", password)).status_code == 200
    finally:
        stack.stop()
