"""Fixtures of the task engine's integration tests."""

import pytest

from tests.factories import Fleet, free_port, hosts_make


@pytest.fixture
def fleet(tmp_path, builtins):
    """A real `ccs-agent fleet` serving ten hosts of dc1 under corp/test."""
    port = free_port()
    running = Fleet(tmp_path, hosts_make("dc1", 10, port), port)
    yield running
    running.stop()
