"""The fault-injection suite in its short form: `bench/faults.py` on 40 hosts, every fault
once, with the default timers, on a PostgreSQL and a Redis server of its own (never the
machine's). A fault passes when every subtask is terminal within 60 s of the component's
return, no job ran twice (the agents' ledger), every recorded outcome is what the agent
answers, no request answered 5xx, the task's events have no gap, and the SSE follower and the
callback receiver got every event (the follower each exactly once)."""

import pytest

from tests.faults.rows import problems
from tests.faults.runs import fault_run

pytestmark = pytest.mark.integration
FAULTS = ("dc-worker", "controller", "fleet", "callbacks", "web", "redis", "postgres", "storm")


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    """One row per fault, from one run of the bench (started when the suite was collected)."""
    found = fault_run("test_faults").rows(timeout=1500)
    assert list(found) == list(FAULTS), "the bench's faults changed"
    return found


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_mid_task_loses_nothing_and_every_host_ends_within_a_minute(rows, fault):
    row = rows[fault]
    assert problems(row) == [], row
