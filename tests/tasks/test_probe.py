"""The probe: each agent asked for its status; answering hosts online, silent ones offline."""

import time

import pytest

from permissions.models import Host
from tasks.services import hosts_probe_plan
from tests.factories import Fleet, free_port, hosts_make

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _until(check, what: str, timeout: float = 40, every=None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        if every:
            every()
        time.sleep(0.3)


def test_probe_marks_hosts_online_and_offline(workers, builtins, tmp_path):
    port = free_port()
    up = hosts_make("dc1", 3, port)
    hosts_make("dc2", 2, free_port())  # nothing listens there
    fleet = Fleet(tmp_path, up, port)
    try:
        assert hosts_probe_plan() == 5
        _until(lambda: Host.objects.filter(status="unknown").count() == 0, "probe did not run")
    finally:
        fleet.stop()
    assert set(Host.objects.filter(status="online").values_list("hostname", flat=True)) == {
        h.hostname for h in up
    }
    assert Host.objects.filter(status="offline").count() == 2
    assert not Host.objects.filter(status="online", last_seen__isnull=True).exists()
