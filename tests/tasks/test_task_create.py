"""Creating a task through the API: bad input answers 400 naming the field and creates nothing."""

import pytest
from rest_framework.test import APIClient

from tasks.models import SubTask, Task
from tests.factories import hosts_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def target_hosts(builtins):
    return hosts_make("dc1", 3, port=1)


def _post(api: APIClient, body, **kw):
    return api.post("/api/v1/tasks/", body, format="json", **kw)


GOOD = {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"plugin": "nope"}, "plugin"),
        ({"version": 99}, "version"),
        ({"version": "abc"}, "version"),
        ({"target": {"nodes": ["corp/absent"]}}, "target.nodes"),
        ({"target": {"hosts": ["no-such-host"]}}, "target.hosts"),
        ({"target": {"nodes": [], "hosts": []}}, "target"),
        ({"target": {"nodes": "corp/test"}}, "target.nodes"),
        ({"target": "corp/test"}, "target.non_field_errors"),
        ({"params": ["x"]}, "params"),
        ({"params": {"unexpected": 1}}, "params.unexpected"),
        ({"run_as": "postgres"}, "run_as"),
        ({"control": {"timeout": 0}}, "control.timeout"),
        ({"control": {"timeout": 10_000}}, "control.timeout"),
        ({"control": {"priority": "urgent"}}, "control.priority"),
        ({"control": {"concurrency": 0}}, "control.concurrency"),
        ({"control": {"batches": [1, "0%"]}}, "control.batches[1]"),
        ({"control": {"batches": "1,10%"}}, "control.batches"),
        ({"control": {"batches": [1, [2]]}}, "control.batches.1"),
        ({"control": {"failure_threshold": "lots"}}, "control.failure_threshold"),
        ({"control": {"auto_resume": -1}}, "control.auto_resume"),
        ({"control": {"canary": True}}, "control.canary"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_bad_input_names_the_field_and_creates_nothing(api, target_hosts, change, field):
    response = _post(api, {**GOOD, **change})
    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body["errors"], body
    assert body["detail"]
    assert Task.objects.count() == 0
    assert SubTask.objects.count() == 0


def test_missing_fields_are_named(api, target_hosts):
    response = _post(api, {})
    assert response.status_code == 400
    assert {"plugin", "target", "run_as"} <= set(response.json()["errors"])


def test_malformed_json_answers_400(api, target_hosts):
    response = api.post("/api/v1/tasks/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "body" in response.json()["errors"]
    assert Task.objects.count() == 0


def test_anonymous_is_refused(target_hosts):
    response = _post(APIClient(), GOOD)
    assert response.status_code == 401
    assert Task.objects.count() == 0


def test_good_task_creates_one_pending_subtask_per_host(
    api, target_hosts, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = _post(api, {**GOOD, "target": {"nodes": ["corp/test"], "hosts": ["dc1-t000"]}})
    assert response.status_code == 201, response.content
    task = Task.objects.get()
    assert response.json()["id"] == task.pk
    assert task.total_hosts == 3
    assert sorted(SubTask.objects.values_list("host__hostname", flat=True)) == [
        "dc1-t000", "dc1-t001", "dc1-t002"
    ]
    assert set(SubTask.objects.values_list("status", flat=True)) == {"pending"}
    assert len(callbacks) == 1  # the release message, sent only after commit
