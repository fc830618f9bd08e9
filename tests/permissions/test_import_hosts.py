"""`manage.py import_hosts`: upserts from CSV or JSON, all or nothing, bad lines named."""

import importlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from permissions.importer import csv_rows, rows_validate
from permissions.models import Datacenter, Host, Node
from permissions.services import hosts_import

pytestmark = pytest.mark.django_db
# The package exports the function under the module's own name; this is the module.
hosts_import_module = importlib.import_module("permissions.services.hosts_import")

HEADER = "hostname,address,port,datacenter,nodes,channel"
GOOD = [
    "web01,10.0.0.1,7001,bj1,corp/search/frontend/bj,agent",
    "web02,10.0.0.2,,bj1,corp/search/frontend/bj;corp/ads,",
    "db01,db01.sh.example.com,22,sh1,corp/search/db|corp/ads,ssh",
]
EXPECTED = {
    "web01": ("10.0.0.1", 7001, "bj1", "agent", ["corp/search/frontend/bj"]),
    "web02": ("10.0.0.2", 7001, "bj1", "agent", ["corp/ads", "corp/search/frontend/bj"]),
    "db01": ("db01.sh.example.com", 22, "sh1", "ssh", ["corp/ads", "corp/search/db"]),
}


@dataclass
class Run:
    """What an import printed, and the error it stopped with (if any)."""

    out: str
    err: str
    error: str | None


def run(path: Path, *args: str) -> Run:
    out, err = StringIO(), StringIO()
    try:
        call_command("import_hosts", str(path), *args, stdout=out, stderr=err)
    except CommandError as error:
        return Run(out.getvalue(), err.getvalue(), str(error))
    return Run(out.getvalue(), err.getvalue(), None)


def csv_file(tmp_path: Path, lines: list[str], name: str = "hosts.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def hosts() -> dict[str, tuple]:
    """Every host as the import sees it: address, port, datacenter, channel, node paths."""
    return {
        h.hostname: (h.address, h.port, h.datacenter.name, h.channel,
                     sorted(n.path for n in h.nodes.all()))
        for h in Host.objects.select_related("datacenter").prefetch_related("nodes")
    }


def snapshot() -> tuple:
    """The whole inventory, down to ids and key salts."""
    return (
        list(Host.objects.order_by("id").values()),
        list(Host.nodes.through.objects.order_by("id").values()),
        list(Node.objects.order_by("id").values()),
        list(Datacenter.objects.order_by("id").values()),
    )


def counts_line(created: int, updated: int, unchanged: int, rejected: int) -> str:
    return (f"hosts: {created} created, {updated} updated, {unchanged} unchanged, "
            f"{rejected} rejected")


def test_good_csv_creates_hosts_nodes_and_datacenters(tmp_path):
    result = run(csv_file(tmp_path, GOOD))
    assert result.error is None
    assert counts_line(3, 0, 0, 0) in result.out
    assert "nodes: 6 created; datacenters: 2 created" in result.out
    assert hosts() == EXPECTED
    bj = Node.objects.get(path="corp/search/frontend/bj")
    assert (bj.name, bj.parent.path, bj.parent.parent.path) == ("bj", "corp/search/frontend",
                                                                "corp/search")
    assert Node.objects.get(path="corp").parent is None


def test_good_json_creates_the_same_inventory(tmp_path):
    items = [
        {"hostname": "web01", "address": "10.0.0.1", "port": 7001, "datacenter": "bj1",
         "nodes": ["corp/search/frontend/bj"], "channel": "agent"},
        {"hostname": "web02", "address": "10.0.0.2", "datacenter": "bj1",
         "nodes": ["corp/search/frontend/bj", "corp/ads"]},
        {"hostname": "db01", "address": "db01.sh.example.com", "port": 22, "datacenter": "sh1",
         "nodes": ["corp/search/db", "corp/ads"], "channel": "ssh"},
    ]
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(items, indent=2))
    result = run(path)
    assert result.error is None
    assert counts_line(3, 0, 0, 0) in result.out
    assert hosts() == EXPECTED


def test_existing_nodes_and_datacenters_are_reused(tmp_path):
    run(csv_file(tmp_path, GOOD[:1]))
    result = run(csv_file(tmp_path, GOOD[1:]))
    assert "nodes: 2 created; datacenters: 1 created" in result.out
    assert Node.objects.count() == 6


def test_bad_rows_import_nothing_and_every_bad_line_is_named(tmp_path):
    path = csv_file(tmp_path, [
        GOOD[0],
        "web03,10.0.0.3,99999,bj1,corp/x,agent",
        "web04,10.0.0.4,7001,bj1,corp//x,telnet",
        GOOD[1],
        "web01,10.0.0.9,7001,bj1,corp/x,agent",
        "web05,10.0.0.5,7001,bj1",
    ])
    result = run(path)
    assert result.error == ("5 of 6 rows are bad; nothing imported "
                            "(fix them, or pass --skip-bad to import the good rows)")
    assert result.err.splitlines() == [
        f"{path}: line 2: duplicate hostname web01 (also line 6)",
        f"{path}: line 3: port: expected a whole number 1..65535, got 99999",
        f"{path}: line 4: nodes: malformed node path: 'corp//x'; "
        "channel: expected agent or ssh, got 'telnet'",
        f"{path}: line 6: duplicate hostname web01 (also line 2)",
        f"{path}: line 7: 4 fields, but the header has 6",
    ]
    assert result.out == ""
    assert (Host.objects.count(), Node.objects.count(), Datacenter.objects.count()) == (0, 0, 0)


def test_bad_json_items_are_named_by_the_line_they_start_on(tmp_path):
    path = tmp_path / "hosts.json"
    path.write_text('[\n  {"hostname": "web01", "address": "10.0.0.1", "datacenter": "bj1",\n'
                    '   "nodes": ["corp/x"]},\n  {"hostname": "web02", "address": "10.0.0.2",\n'
                    '   "datacenter": "bj1", "nodes": "corp/x", "rack": 4}\n]\n')
    result = run(path)
    assert result.err == (f"{path}: line 4 (item 2): unknown keys: rack; "
                          "nodes: expected a list of node paths, got 'corp/x'\n")
    assert result.error.startswith("1 of 2 rows are bad; nothing imported")
    assert not Host.objects.exists()


def test_skip_bad_imports_the_good_rows_and_counts_the_rejected(tmp_path):
    path = csv_file(tmp_path, [GOOD[0], "web03,10.0.0.3,0,bj1,corp/x,", GOOD[2],
                               "web04,not_an_address,,bj1,corp/x,"])
    result = run(path, "--skip-bad")
    assert result.error is None
    assert counts_line(2, 0, 0, 2) in result.out
    assert result.err.splitlines() == [
        f"{path}: line 3: port: expected a whole number 1..65535, got 0",
        f"{path}: line 5: address: 'not_an_address' is not a valid DNS name",
    ]
    assert sorted(hosts()) == ["db01", "web01"]


def test_a_second_identical_run_changes_nothing(tmp_path):
    path = csv_file(tmp_path, GOOD)
    run(path)
    before = snapshot()
    result = run(path)
    assert counts_line(0, 0, 3, 0) in result.out
    assert "nodes: 0 created; datacenters: 0 created" in result.out
    assert snapshot() == before


def test_changes_update_fields_and_replace_node_sets_keeping_key_salt_and_status(tmp_path):
    run(csv_file(tmp_path, GOOD))
    Host.objects.filter(hostname="web01").update(status=Host.Status.ONLINE)
    salts = dict(Host.objects.values_list("hostname", "key_salt"))
    result = run(csv_file(tmp_path, [
        "web01,10.0.1.1,7001,bj1,corp/search/frontend/bj,agent",
        "web02,10.0.0.2,,bj1,corp/ads,",
        GOOD[2],
    ]))
    assert counts_line(0, 2, 1, 0) in result.out
    assert hosts()["web01"] == ("10.0.1.1", *EXPECTED["web01"][1:])
    assert hosts()["web02"][-1] == ["corp/ads"]
    assert dict(Host.objects.values_list("hostname", "key_salt")) == salts
    assert Host.objects.get(hostname="web01").status == Host.Status.ONLINE


def test_hosts_missing_from_the_file_are_left_alone(tmp_path):
    run(csv_file(tmp_path, GOOD))
    result = run(csv_file(tmp_path, ["web09,10.0.0.9,,bj1,corp/ads,"]))
    assert counts_line(1, 0, 0, 0) in result.out
    assert set(hosts()) == {"web01", "web02", "db01", "web09"}


def test_imports_in_several_chunks_give_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setattr(hosts_import_module, "CHUNK", 2)
    run(csv_file(tmp_path, GOOD))
    assert hosts() == EXPECTED
    result = run(csv_file(tmp_path, [GOOD[0], "web02,10.0.0.7,,bj1,corp/ads,", GOOD[2]]))
    assert counts_line(0, 1, 2, 0) in result.out
    assert hosts()["web02"] == ("10.0.0.7", 7001, "bj1", "agent", ["corp/ads"])


def _queries_to_import(prefix: str, count: int) -> int:
    """Queries to import `count` new hosts into new datacenters under new nodes."""
    rows = [f"{prefix}{i},10.1.{i // 250}.{i % 250},,{prefix}{i % 3},{prefix}/n{i % 7};corp/all,"
            for i in range(count)]
    good, _ = rows_validate(csv_rows("\n".join([HEADER, *rows])))
    with CaptureQueriesContext(connection) as queries:
        hosts_import(rows=good)
    return len(queries)


def test_the_number_of_queries_does_not_grow_with_the_rows():
    assert _queries_to_import("a", 10) == _queries_to_import("b", 400)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("hosts.json", '[\n  {"hostname": "web01",}\n]', "bad JSON at line 2 column 24"),
        ("hosts.json", '{"hosts": []}', "expected a JSON list of host objects"),
        ("hosts.csv", "hostname,ip,datacenter,nodes\n", "unknown columns 'ip' in the header"),
        ("hosts.csv", "", "the first line must be the header"),
        ("hosts.txt", HEADER, "cannot tell the format from the extension"),
        ("hosts.csv", b"hostname\xff", "not UTF-8 text"),
    ],
)
def test_a_malformed_file_is_refused_with_a_clear_error(tmp_path, name, text, message):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    result = run(path)
    assert result.error.startswith(f"{path}: ")
    assert message in result.error
    assert not Host.objects.exists()


def test_a_missing_file_is_refused(tmp_path):
    result = run(tmp_path / "absent.csv")
    path = tmp_path / "absent.csv"
    assert result.error == f"{path}: cannot read the file: No such file or directory"


def test_format_option_overrides_the_extension(tmp_path):
    path = tmp_path / "hosts.txt"
    path.write_text("\n".join([HEADER, *GOOD]))
    assert counts_line(3, 0, 0, 0) in run(path, "--format", "csv").out


def test_from_the_shell_a_bad_file_exits_non_zero_without_a_traceback(tmp_path):
    path = tmp_path / "hosts.json"
    path.write_text("[\n  {")
    done = subprocess.run(
        [sys.executable, "manage.py", "import_hosts", str(path)],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (f"CommandError: {path}: bad JSON at line 2 column 4: "
                           "Expecting property name enclosed in double quotes\n")


def test_progress_bar_when_asked(tmp_path):
    result = run(csv_file(tmp_path, GOOD), "--progress")
    assert result.err.startswith("\rimporting hosts [")
    assert result.err.endswith("] 3/3 100%\n")


def test_no_progress_bar_on_a_small_file_or_a_pipe(tmp_path):
    assert run(csv_file(tmp_path, GOOD)).err == ""


def test_the_import_logs_an_audit_line_on_commit(
    tmp_path, caplog, admin, django_capture_on_commit_callbacks
):
    path = csv_file(tmp_path, GOOD)
    with caplog.at_level(logging.INFO, logger="permissions.services.hosts_import"):
        with django_capture_on_commit_callbacks(execute=True):
            run(path)
        with django_capture_on_commit_callbacks(execute=True):
            good, _ = rows_validate(csv_rows(path.read_text()))
            hosts_import(rows=good, actor=admin, source="api")
    assert [r.getMessage() for r in caplog.records] == [
        f"hosts imported by system from {path}: 3 created, 0 updated, 0 unchanged; "
        "6 nodes and 2 datacenters created",
        "hosts imported by root-admin from api: 0 created, 0 updated, 3 unchanged; "
        "0 nodes and 0 datacenters created",
    ]


def test_ssh_fields_are_imported_and_a_bad_host_key_is_refused(tmp_path):
    fingerprint = "SHA256:" + "q" * 43
    path = tmp_path / "ssh.json"
    path.write_text(json.dumps([
        {"hostname": "db09", "address": "10.0.0.9", "datacenter": "sh1", "nodes": ["corp/db"],
         "channel": "ssh", "ssh_port": 2222, "ssh_user": "deploy", "ssh_host_key": fingerprint},
        {"hostname": "db10", "address": "10.0.0.10", "datacenter": "sh1", "nodes": ["corp/db"],
         "channel": "ssh", "ssh_host_key": "just trust it"},
    ]))
    result = run(path, "--skip-bad")
    assert "ssh_host_key: unreadable ssh_host_key" in result.err
    host = Host.objects.get()
    assert (host.channel, host.ssh_port, host.ssh_user, host.ssh_host_key) == (
        "ssh", 2222, "deploy", fingerprint
    )
