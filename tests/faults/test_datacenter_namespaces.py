"""Datacenters as network namespaces: each datacenter's worker and fleet in a namespace of its
own, reaching the control plane's PostgreSQL and Redis through a veth pair and no other
datacenter. A task over both succeeds; a partition of dc1 mid-task (its link down for 10 s)
ends its subtasks by pulling their results once it heals, while dc2 finishes untouched.
`bench/faults.py --netns` creates the namespaces and always removes them."""

import json
import subprocess
import sys

import pytest

from ccs.stack import ROOT
from tests.faults.rows import problems

pytestmark = pytest.mark.integration


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    before = _namespaces()
    done = subprocess.run(
        [sys.executable, "bench/faults.py", "--netns", "--hosts", "20", "--faults",
         "none,partition", "--down", "10", "--patience", "60", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _namespaces() == before, "namespaces left behind"
    found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {row["fault"]: row for row in found}


def test_a_task_over_two_datacenter_namespaces_succeeds(rows):
    row = rows["none"]
    assert (row["task_status"], problems(row), row["lost"]) == ("succeeded", [], 0), row


def test_a_partitioned_datacenter_is_pulled_when_it_heals_and_the_other_is_untouched(rows):
    row = rows["partition"]
    assert problems(row) == [], row
    assert row["others_untouched"] is True, row
    assert row["task_status"] == "succeeded", row
