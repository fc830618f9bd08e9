"""Two `celery beat` processes at once, each sending the schedules' tick every second to the
real controller: every occurrence still fires exactly once."""

from datetime import timedelta

import pytest
from django.utils import timezone

from ccs.stack import Stack, wait_for
from jobs.models import JobRun, Occurrence, Schedule
from jobs.services import saved_job_create, schedule_create
from tasks.models import Task
from tests.conftest import _on_test_database
from tests.factories import hosts_make

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
BEATS = 2
TICKS = 6  # each beat's ticks seen before counting


@pytest.fixture
def beats(workers, tmp_path):
    """Two beat processes with their own schedule files, ticking every second."""
    stack = Stack(env={**_on_test_database(), "CCS_SCHEDULE_TICK": "1"}, log_dir=tmp_path)
    for n in range(BEATS):
        stack.start(f"beat-{n}", f"celery -A ccs beat -l INFO -s {tmp_path}/beat-{n}")
    yield [tmp_path / f"beat-{n}.log" for n in range(BEATS)]
    stack.stop()


def _ticks(log) -> int:
    return log.read_text().count("Sending due task schedules-fire") if log.exists() else 0


def test_each_occurrence_fires_once_with_two_beats(admin, builtins, beats):
    hosts_make("dc1", 2, port=1)
    launch = {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"], "hosts": []},
              "run_as": "root", "control": {}}
    job = saved_job_create(actor=admin, name="ping-test", launch=launch)
    # yearly, made due at once: its next occurrence is months away, whenever the test runs
    cron = schedule_create(actor=admin, job_id=job.pk, cron="0 0 1 1 *")
    Schedule.objects.filter(pk=cron.pk).update(next_at=timezone.now())
    once = schedule_create(actor=admin, job_id=job.pk,
                           once_at=timezone.now() + timedelta(seconds=2))
    start = [_ticks(log) for log in beats]
    wait_for(lambda: all(_ticks(log) >= n + TICKS for log, n in zip(beats, start, strict=True)),
             "both beats ticking", timeout=60)
    wait_for(lambda: Occurrence.objects.count() == 2, "the two occurrences", timeout=30)
    occurrences = {o.schedule_id: o for o in Occurrence.objects.all()}
    assert {o.status for o in occurrences.values()} == {"started"}
    assert occurrences[once.pk].at == once.once_at
    assert Task.objects.count() == JobRun.objects.count() == 2
    assert Schedule.objects.get(pk=once.pk).next_at is None
    assert Schedule.objects.get(pk=cron.pk).next_at > timezone.now() + timedelta(days=1)
