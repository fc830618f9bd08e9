"""Schedules of saved jobs: cron expressions in a time zone or a one-off time, next fire times,
a paused flag, one firing per occurrence however many beats run, and the owner's rights
checked when it fires (a refusal is an occurrence that failed, visibly)."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from guardian.shortcuts import remove_perm

from jobs.models import JobAudit, JobRun, Occurrence, Schedule
from jobs.services import schedules_fire_due
from tasks.models import Task
from tests.jobs.test_saved_jobs import JOB
from tests.permissions import conftest as rights
from tests.permissions.conftest import client_for

pytestmark = pytest.mark.django_db
tree = rights.tree


@pytest.fixture
def job(tree) -> dict:
    return client_for(tree.member).post("/api/v1/jobs/", JOB, format="json").json()


def _schedule(client, job: dict, body: dict):
    return client.post(f"/api/v1/jobs/{job['id']}/schedules/", body, format="json")


def test_a_cron_schedule_shows_its_next_fire_times_in_its_time_zone(tree, job):
    made = _schedule(client_for(tree.member), job,
                     {"cron": "0 3 * * 1-5", "timezone": "Europe/Paris"})
    assert made.status_code == 201, made.content
    schedule = made.json()
    assert (schedule["owner"], schedule["paused"], schedule["job_name"]) == (
        "member", False, "ping-bj")
    times = [datetime.fromisoformat(t) for t in schedule["upcoming"]]
    assert len(times) == 5 and times == sorted(times) and times[0] > timezone.now()
    for at in times:
        local = at.astimezone(ZoneInfo("Europe/Paris"))
        assert (local.hour, local.minute) == (3, 0) and local.isoweekday() <= 5
    assert datetime.fromisoformat(schedule["next_at"]) == times[0]
    audit = JobAudit.objects.get(action="schedule")
    assert audit.detail == {"schedule": schedule["id"], "cron": "0 3 * * 1-5",
                            "timezone": "Europe/Paris", "once_at": None, "paused": False,
                            "owner": "member"}


def test_pausing_stops_the_firing_and_the_next_times(tree, job):
    member = client_for(tree.member)
    schedule = _schedule(member, job, {"cron": "* * * * *"}).json()
    paused = member.patch(f"/api/v1/schedules/{schedule['id']}/", {"paused": True},
                          format="json")
    assert paused.status_code == 200, paused.content
    assert paused.json()["upcoming"] == []
    Schedule.objects.update(next_at=timezone.now() - timedelta(seconds=1))
    assert schedules_fire_due() == [] and not Task.objects.exists()


def test_a_due_occurrence_fires_once_as_the_owner(tree, job):
    schedule = _schedule(client_for(tree.member), job, {"cron": "*/5 * * * *"}).json()
    due = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    Schedule.objects.update(next_at=due)
    fired = schedules_fire_due()
    assert [(o.at, o.status) for o in fired] == [(due, "started")]
    assert schedules_fire_due() == []  # the next occurrence is later
    task = Task.objects.get()
    assert task.creator == tree.member and task.total_hosts == 2
    assert JobRun.objects.get().trigger == "schedule"
    next_at = Schedule.objects.get().next_at
    assert next_at > timezone.now() and next_at.minute % 5 == 0
    occurrences = client_for(tree.member).get(
        f"/api/v1/schedules/{schedule['id']}/occurrences/").json()["results"]
    assert [(o["status"], o["task"], o["error"]) for o in occurrences] == [
        ("started", task.pk, "")]


def test_an_owner_who_lost_the_rights_fails_the_occurrence_visibly(tree, job):
    member = client_for(tree.member)
    schedule = _schedule(member, job, {"once_at": (timezone.now() + timedelta(hours=1))
                                       .isoformat()}).json()
    remove_perm("operate_node", tree.member, tree.node["corp/search/frontend/bj"])
    fired = schedules_fire_due(timezone.now() + timedelta(hours=2))
    assert [o.status for o in fired] == ["failed"]
    assert not Task.objects.exists() and not JobRun.objects.exists()
    assert Schedule.objects.get().next_at is None  # a one-off fires once, even when it fails
    # the owner still sees the job (they own it) and reads why
    occurrences = member.get(f"/api/v1/schedules/{schedule['id']}/occurrences/").json()
    assert occurrences["results"][0]["status"] == "failed"
    assert occurrences["results"][0]["error"] == (
        "target.nodes: unknown node: corp/search/frontend/bj")


def test_others_see_schedules_as_they_see_the_job(tree, job):
    schedule = _schedule(client_for(tree.member), job, {"cron": "0 * * * *"}).json()
    assert client_for(tree.outsider).get(
        f"/api/v1/schedules/{schedule['id']}/").status_code == 404
    viewer = client_for(tree.viewer)
    assert viewer.get(f"/api/v1/schedules/{schedule['id']}/").status_code == 200
    assert viewer.patch(f"/api/v1/schedules/{schedule['id']}/", {"paused": True},
                        format="json").status_code == 403
    assert viewer.delete(f"/api/v1/schedules/{schedule['id']}/").status_code == 403
    assert client_for(tree.member).delete(
        f"/api/v1/schedules/{schedule['id']}/").status_code == 204
    assert not Schedule.objects.exists()


@pytest.mark.parametrize(("body", "field"), [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * * * * *"}, "cron"),
    ({"cron": "every day"}, "cron"),
    ({}, "cron"),
    ({"cron": "0 3 * * *", "once_at": "2099-01-01T00:00:00Z"}, "cron"),
    ({"once_at": "2000-01-01T00:00:00Z"}, "once_at"),
    ({"once_at": "tomorrow"}, "once_at"),
    ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ({"cron": "0 3 * * *", "paused": "maybe"}, "paused"),
    ({"cron": "0 3 * * *", "when": "now"}, "when"),
])
def test_bad_input_names_the_field_and_schedules_nothing(tree, job, body, field):
    answer = _schedule(client_for(tree.member), job, body)
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["errors"], answer.json()
    assert not Schedule.objects.exists() and not Occurrence.objects.exists()
