"""Datacenters as network namespaces: each datacenter's worker and fleet in a namespace of its
own, reaching the control plane's PostgreSQL and Redis through a veth pair and no other
datacenter. A task over both succeeds; a partition of dc1 mid-task (its link down for 10 s)
ends its subtasks by pulling their results once it heals, while dc2 finishes untouched.
`bench/faults.py --netns` creates the namespaces and always removes them."""

import pytest

from tests.faults.rows import problems
from tests.faults.runs import fault_run, namespaces

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    """The rows of one `--netns` run (started when the suite was collected)."""
    run = fault_run("test_datacenter_namespaces")
    found = run.rows(timeout=900)
    assert namespaces() == run.namespaces_before, "namespaces left behind"
    return found


def test_a_task_over_two_datacenter_namespaces_succeeds(rows):
    row = rows["none"]
    assert (row["task_status"], problems(row), row["lost"]) == ("succeeded", [], 0), row


def test_a_partitioned_datacenter_is_pulled_when_it_heals_and_the_other_is_untouched(rows):
    row = rows["partition"]
    assert problems(row) == [], row
    assert row["others_untouched"] is True, row
    assert row["task_status"] == "succeeded", row
