"""Control data of a task — batches, concurrency, failure threshold — parsed and applied.

Pure functions: no database, so the controller's arithmetic is tested on its own.
"""

import math
import re
from dataclasses import dataclass

from ccs.errors import InvalidInput

# Above 0 % and at most 100 %, written plainly with up to three decimals: "10%", "0.5%".
PERCENT = re.compile(
    r"(100(?:\.0{1,3})?|[1-9][0-9]?(?:\.[0-9]{1,3})?|0\.(?:[1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))%"
)
MAX_BATCHES = 20
MAX_COUNT = 10_000_000  # hosts: beyond any fleet, within the columns' range


def _amount(value: object, total: int, field: str) -> int:
    """A count (positive int) or a percentage ("10%") of `total`, at least 1."""
    if isinstance(value, bool):
        raise InvalidInput.field(field, f"{value!r} is neither a count nor a percentage")
    if isinstance(value, int):
        if not 1 <= value <= MAX_COUNT:
            raise InvalidInput.field(field, f"{value} must be between 1 and {MAX_COUNT}")
        return value
    if isinstance(value, str) and (match := PERCENT.fullmatch(value)):
        return max(1, math.ceil(total * float(match.group(1)) / 100))
    if isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?%", value):
        raise InvalidInput.field(
            field, f"{value} must be above 0% and at most 100%, with at most 3 decimals")
    raise InvalidInput.field(field, f"{value!r} is neither a count nor a percentage like '10%'")


def count_or_percent(text: str) -> int | str:
    """A size as stored or typed ("3", "10%") as the checks take it: a count is an int."""
    return int(text) if text.isdigit() else text


def batches_check(batches: object) -> list:
    if not isinstance(batches, list) or len(batches) > MAX_BATCHES:
        raise InvalidInput.field("control.batches", f"a list of at most {MAX_BATCHES} sizes")
    for index, size in enumerate(batches):
        _amount(size, 100, f"control.batches[{index}]")
    return batches


def threshold_check(threshold: object) -> str:
    if threshold in (None, ""):
        return ""
    _amount(threshold, 100, "control.failure_threshold")
    return str(threshold)


def batch_limits(batches: list, total: int) -> list[int]:
    """Cumulative host counts at the end of each batch; the last batch takes the rest."""
    if not batches:
        return [total]
    limits, running = [], 0
    for index, size in enumerate(batches):
        running = min(total, running + _amount(size, total, f"control.batches[{index}]"))
        limits.append(running)
    limits[-1] = total
    return limits


def failure_limit(threshold: str, total: int) -> int | None:
    if not threshold:
        return None
    return _amount(count_or_percent(threshold), total, "control.failure_threshold")


@dataclass(frozen=True)
class Progress:
    """How far a task's subtasks have come, from their counts per state."""

    total: int
    unreleased: int  # pending or held
    in_flight: int  # queued, running or paused
    failures: int  # failed or timed out

    @property
    def released(self) -> int:
        return self.total - self.unreleased

    @property
    def done(self) -> bool:
        return self.unreleased == 0 and self.in_flight == 0


def release_budget(
    progress: Progress, batch_limit: int, concurrency: int | None
) -> int:
    """How many more subtasks may be released now."""
    budget = min(batch_limit - progress.released, progress.unreleased)
    if concurrency:
        budget = min(budget, concurrency - progress.in_flight)
    return max(0, budget)
