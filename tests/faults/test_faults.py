"""The fault-injection suite in its short form: `bench/faults.py` on 40 hosts, every fault
once, with the default timers, on a PostgreSQL and a Redis server of its own (never the
machine's). A fault passes when every subtask is terminal within 60 s of the component's
return, no job ran twice (the agents' ledger), every recorded outcome is what the agent
answers, no request answered 5xx, the task's events have no gap, and the SSE follower and the
callback receiver got every event (the follower each exactly once)."""

import json
import subprocess
import sys

import pytest

from ccs.stack import ROOT
from tests.faults.rows import problems

pytestmark = pytest.mark.integration
FAULTS = ("dc-worker", "controller", "fleet", "callbacks", "web", "redis", "postgres", "storm")


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    """One row per fault, from one run of the bench."""
    done = subprocess.run(
        [sys.executable, "bench/faults.py", "--hosts", "40", "--patience", "60", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [row["fault"] for row in found] == list(FAULTS), "the bench's faults changed"
    return {row["fault"]: row for row in found}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_mid_task_loses_nothing_and_every_host_ends_within_a_minute(rows, fault):
    row = rows[fault]
    assert problems(row) == [], row
