"""Beat sends each periodic entry once per period, however many beats run side by side."""

from datetime import timedelta

import pytest
from celery.beat import ScheduleEntry
from celery.schedules import crontab, schedule

from ccs.beat import entry_period, firing_claim
from ccs.celery import app


@pytest.mark.django_db
def test_each_period_of_an_entry_is_claimed_by_one_beat():
    assert firing_claim("hosts-probe", 7) is True
    assert firing_claim("hosts-probe", 7) is False  # the other beat, same period
    assert firing_claim("hosts-probe", 8) is True
    assert firing_claim("another", 7) is True


def test_a_period_is_the_entrys_interval_or_a_minute():
    every = ScheduleEntry("x", "t", schedule=schedule(timedelta(seconds=2)), app=app)
    cron = ScheduleEntry("y", "t", schedule=crontab(minute="*/5"), app=app)
    assert (entry_period(every), entry_period(cron)) == (2.0, 60.0)
