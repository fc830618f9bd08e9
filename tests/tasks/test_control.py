"""The controller's arithmetic: batch sizes, thresholds and release budgets."""

import pytest

from ccs.errors import InvalidInput
from tasks.control import (
    Progress,
    batch_limits,
    batches_check,
    failure_limit,
    release_budget,
    threshold_check,
)


def test_batches_are_sizes_of_each_batch_and_the_last_takes_the_rest():
    assert batch_limits([1, "50%", "100%"], 10) == [1, 6, 10]
    assert batch_limits([1, "10%", "100%"], 30000) == [1, 3001, 30000]
    assert batch_limits([2, 2], 10) == [2, 10]
    assert batch_limits([], 7) == [7]
    assert batch_limits([5, 5], 3) == [3, 3]


@pytest.mark.parametrize("bad", [[0], ["0%"], ["101%"], ["ten"], [True], "1,2", [1] * 21, [1.5]])
def test_bad_batches_name_the_entry(bad):
    with pytest.raises(InvalidInput) as error:
        batches_check(bad)
    assert any(key.startswith("control.batches") for key in error.value.errors)


def test_failure_threshold_is_a_count_or_a_percentage():
    assert failure_limit("2", 10) == 2
    assert failure_limit("10%", 200) == 20
    assert failure_limit("1%", 10) == 1
    assert failure_limit("", 10) is None
    assert threshold_check(3) == "3"
    with pytest.raises(InvalidInput):
        threshold_check("many")
    with pytest.raises(InvalidInput):
        threshold_check(0)


def test_release_budget_respects_batch_and_concurrency():
    fresh = Progress(total=10, unreleased=10, in_flight=0, failures=0)
    assert release_budget(fresh, batch_limit=1, concurrency=None) == 1
    assert release_budget(fresh, batch_limit=10, concurrency=2) == 2
    busy = Progress(total=10, unreleased=6, in_flight=2, failures=0)
    assert release_budget(busy, batch_limit=10, concurrency=2) == 0
    assert release_budget(busy, batch_limit=10, concurrency=3) == 1
    assert release_budget(busy, batch_limit=4, concurrency=None) == 0
    assert release_budget(busy, batch_limit=6, concurrency=None) == 2
