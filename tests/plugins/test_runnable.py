"""Only approved, unretired versions start tasks; a refusal answers 400 naming `plugin` or
`version` and why. Task parameters are checked against the version's schema."""

import pytest

from plugins import services
from tasks.hosts.jobs import shard_jobs
from tasks.models import Task
from tests.factories import hosts_make

pytestmark = pytest.mark.django_db

SCHEMA = {
    "type": "object",
    "properties": {
        "count": {"type": "integer", "minimum": 1},
        "mode": {"enum": ["fast", "safe"]},
        "target": {"type": "object", "properties": {"port": {"type": "integer"}},
                   "required": ["port"]},
    },
    "required": ["count"],
    "additionalProperties": False,
}


@pytest.fixture
def hosts(db):
    return hosts_make("dc1", 2, port=1)


def _task(api, version: int | None = None, params: dict | None = None, plugin: str = "hello"):
    body = {"plugin": plugin, "params": params or {}, "target": {"nodes": ["corp/test"]},
            "run_as": "root"}
    if version is not None:
        body["version"] = version
    return api.post("/api/v1/tasks/", body, format="json")


@pytest.mark.parametrize(
    ("status", "why"),
    [
        ("draft", "is a draft, not yet submitted for review"),
        ("pending", "is pending review"),
        ("rejected", "was rejected in review"),
        ("retired", "is retired and cannot start new tasks"),
    ],
)
def test_only_approved_versions_start_tasks(api, hosts, make_version, status, why):
    make_version(status)
    response = _task(api, version=1)
    assert response.status_code == 400, response.content
    message = response.json()["errors"]["version"][0]
    assert message.startswith(f"hello v1 {why}: only approved versions run"), message
    assert Task.objects.count() == 0


def test_without_a_version_the_plugin_is_named_with_why(api, hosts, make_version):
    make_version("retired")
    make_version("pending")
    response = _task(api)
    assert response.status_code == 400
    assert response.json()["errors"]["plugin"] == [
        "hello has no approved version to run (v2 is pending review; "
        "v1 is retired and cannot start new tasks)"
    ]


def test_unknown_plugin_and_version_are_named(api, hosts, make_version):
    make_version("approved")
    assert "plugin" in _task(api, plugin="nope").json()["errors"]
    response = _task(api, version=9)
    assert response.json()["errors"] == {"version": ["hello has no version 9"]}


def test_newest_approved_runs_by_default_and_a_retired_one_hints_at_it(
    api, hosts, make_version
):
    make_version("approved")
    make_version("approved")
    make_version("pending")
    response = _task(api)
    assert response.status_code == 201, response.content
    assert response.json()["version"] == 2
    services.plugin_version_retire(
        actor=Task.objects.get().creator, version_id=Task.objects.get().plugin_version_id
    )
    refused = _task(api, version=2)
    assert refused.json()["errors"]["version"][0].endswith("(newest approved: v1)")
    assert _task(api).json()["version"] == 1


def test_retiring_leaves_existing_tasks_alone(api, hosts, make_version, people):
    version = make_version("approved")
    task = Task.objects.get(pk=_task(api).json()["id"])
    services.plugin_version_retire(actor=people.reviewer, version_id=version.pk)
    jobs = shard_jobs(task.pk, list(task.subtasks.values_list("id", flat=True)))
    assert len(jobs) == 2
    assert jobs[0].job["signature"] == version.signature
    assert jobs[0].job["meta"] == version.signed_meta()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "params.count"),
        ({"count": "three"}, "params.count"),
        ({"count": 0}, "params.count"),
        ({"count": 1, "mode": "reckless"}, "params.mode"),
        ({"count": 1, "target": {"port": "http"}}, "params.target.port"),
        ({"count": 1, "target": {}}, "params.target.port"),
        ({"count": 1, "surprise": True}, "params.surprise"),
    ],
)
def test_schema_errors_name_the_parameter(api, hosts, make_version, params, field):
    make_version("approved", params_schema=SCHEMA)
    response = _task(api, params=params)
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert field in errors, errors
    assert response.json()["detail"].startswith(field)
    assert Task.objects.count() == 0


def test_missing_and_unexpected_parameters_are_named_themselves(api, hosts, make_version):
    make_version("approved", params_schema=SCHEMA)
    missing = _task(api, params={}).json()["errors"]
    assert missing == {"params.count": ["'count' is a required property"]}
    extra = _task(api, params={"count": 1, "surprise": 1}).json()["errors"]["params.surprise"]
    assert "'surprise' was unexpected" in extra[0]


def test_valid_params_start_the_task(api, hosts, make_version):
    make_version("approved", params_schema=SCHEMA)
    response = _task(api, params={"count": 2, "mode": "safe", "target": {"port": 80}})
    assert response.status_code == 201, response.content
    assert Task.objects.get().params == {"count": 2, "mode": "safe", "target": {"port": 80}}


def test_builtin_sleep_requires_seconds(api, hosts, builtins):
    response = _task(api, plugin="sleep", params={})
    assert response.json()["errors"] == {"params.seconds": ["'seconds' is a required property"]}
    response = _task(api, plugin="sleep", params={"seconds": 4000})
    assert "params.seconds" in response.json()["errors"]
    assert _task(api, plugin="sleep", params={"seconds": 1}).status_code == 201
