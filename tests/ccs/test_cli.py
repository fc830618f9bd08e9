"""The `ccs` command line against a real HTTP server."""

import pytest
from django.contrib.auth import get_user_model

from ccs.cli import main
from tasks.models import Task
from tests.factories import hosts_make

pytestmark = pytest.mark.django_db(transaction=True)


def _ccs(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def server(live_server, builtins, monkeypatch):
    get_user_model().objects.create_superuser("ops", password="s3cret")
    hosts_make("dc1", 3, port=1)
    monkeypatch.setenv("CCS_PASSWORD", "s3cret")
    return live_server.url


def test_login_run_show_pause_stop(server, capsys):
    code, token, _ = _ccs(capsys, "--url", server, "login", "ops")
    assert code == 0 and len(token.strip()) == 40
    auth = ("--url", server, "--token", token.strip())
    code, out, err = _ccs(capsys, *auth, "run", "ping", "--node", "corp/test", "--as", "root",
                          "--batches", "1,50%,100%", "--concurrency", "2")
    assert code == 0, err
    task = Task.objects.get()
    assert out == f"task {task.pk}: ping v1 on 3 hosts\n"
    assert (task.batches, task.concurrency) == ([1, "50%", "100%"], 2)
    code, out, _ = _ccs(capsys, *auth, "show", str(task.pk))
    assert code == 0 and "on 3 hosts" in out
    code, out, _ = _ccs(capsys, *auth, "pause", str(task.pk))
    assert (code, out) == (0, f"task {task.pk}: paused\n")
    code, out, _ = _ccs(capsys, *auth, "stop", str(task.pk))
    assert (code, out) == (0, f"task {task.pk}: stopped\n")
    code, _, err = _ccs(capsys, *auth, "resume", str(task.pk))
    assert code == 1 and "cannot resume a task that is stopped" in err


def test_errors_name_what_is_wrong(server, capsys):
    code, _, err = _ccs(capsys, "--url", server, "--token", "nope", "show", "1")
    assert code == 1 and "Invalid token" in err
    code, token, _ = _ccs(capsys, "--url", server, "login", "ops")
    auth = ("--url", server, "--token", token.strip())
    code, _, err = _ccs(capsys, *auth, "run", "nope", "--node", "corp/test", "--as", "root")
    assert code == 1 and "plugin: unknown plugin: nope" in err
    code, _, err = _ccs(capsys, *auth, "run", "ping", "--node", "corp/x", "--as", "root")
    assert code == 1 and "target.nodes: unknown node: corp/x" in err
    code, _, err = _ccs(capsys, *auth, "run", "ping", "--param", "oops", "--as", "root")
    assert code == 2 and "expected NAME=VALUE" in err
    code, _, err = _ccs(capsys, "--url", "http://127.0.0.1:9", "--token", "t", "show", "1")
    assert code == 1 and "cannot reach" in err
    assert Task.objects.count() == 0
