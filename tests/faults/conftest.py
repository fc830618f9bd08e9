"""The fault runs are mostly waiting (a component down for seconds, leases lapsing): each
`bench/faults.py` run whose tests were collected starts in the background as soon as
collection ends, and the rest of the suite runs meanwhile (tests/faults/runs.py)."""

from pathlib import Path

import pytest

from tests.faults import runs


def pytest_collection_finish(session: pytest.Session) -> None:
    runs.start(sorted({Path(item.path).stem for item in session.items} & set(runs.RUNS)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    runs.stop()
