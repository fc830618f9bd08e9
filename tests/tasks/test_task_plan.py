"""The plan of a launch (`POST tasks/?plan=1`): what it would do, created nothing, and the task
created after it matches it."""

import pytest

from permissions.models import Host
from tasks.control import batch_limits
from tasks.models import Quota, SubTask, Task
from tests.permissions import conftest as rights
from tests.permissions.conftest import client_for

pytestmark = pytest.mark.django_db
tree = rights.tree  # the owner, member, viewer and outsider of a small tree
LAUNCH = {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/search"],
                                                      "hosts": ["ads-t000"]},
          "run_as": "root", "control": {"batches": [1, "50%", "100%"]}}


def _plan(client, body=LAUNCH, query="?plan=1"):
    return client.post(f"/api/v1/tasks/{query}", body, format="json")


def test_plan_matches_the_task_created_after_it(api, tree):
    plan = _plan(api)
    assert plan.status_code == 200, plan.content
    answer = plan.json()
    assert Task.objects.count() == 0 and SubTask.objects.count() == 0
    assert answer["allowed"] is True
    assert answer["datacenters"] == {"dc1": 4, "dc2": 1}
    assert answer["not_operable"] == {"count": 0, "hosts": []}
    assert answer["quota"] == {"allowed": True, "detail": ""}

    created = api.post("/api/v1/tasks/", LAUNCH, format="json").json()
    task = Task.objects.get(pk=created["id"])
    assert answer["total_hosts"] == task.total_hosts == 5
    assert (answer["plugin"], answer["version"]) == (created["plugin"], created["version"])
    assert answer["timeout"] == task.timeout
    per_dc = {}
    for name in SubTask.objects.filter(task=task).values_list("datacenter__name", flat=True):
        per_dc[name] = per_dc.get(name, 0) + 1
    assert per_dc == answer["datacenters"]
    limits = batch_limits(task.batches, task.total_hosts)
    assert answer["batches"] == [limits[0], limits[1] - limits[0], limits[2] - limits[1]]
    assert answer["batches"] == [1, 3, 1]


def test_plan_lists_hosts_not_operable_instead_of_refusing(tree):
    # the viewer sees corp/search and operates nothing of it
    body = {**LAUNCH, "target": {"nodes": ["corp/search/frontend/sh"], "hosts": ["bj-t000"]}}
    answer = _plan(client_for(tree.viewer), body)
    assert answer.status_code == 200, answer.content
    assert answer.json()["not_operable"] == {"count": 3,
                                             "hosts": ["bj-t000", "sh-t000", "sh-t001"]}
    assert answer.json()["allowed"] is False
    launched = client_for(tree.viewer).post("/api/v1/tasks/", body, format="json")
    assert launched.status_code == 403  # the plan said so
    assert Task.objects.count() == 0


def test_plan_shows_hosts_offline_at_the_last_probe(api, tree):
    Host.objects.filter(hostname="bj-t001").update(status=Host.Status.OFFLINE)
    answer = _plan(api).json()
    assert answer["unreachable"] == {"count": 1, "hosts": ["bj-t001"]}
    assert answer["allowed"] is True  # the sitter may find it again; a launch is accepted


def test_plan_gives_the_quota_answer(tree):
    Quota.objects.create(user=tree.owner, hosts_per_task=2)
    body = {**LAUNCH, "target": {"nodes": ["corp/search"]}}
    answer = _plan(client_for(tree.owner), body).json()
    assert answer["quota"] == {"allowed": False,
                               "detail": "hosts_per_task limit is 2; this task targets 4"}
    assert answer["allowed"] is False


def test_plan_of_a_target_out_of_view_answers_as_the_launch_does(tree):
    body = {**LAUNCH, "target": {"nodes": ["corp/ads"]}}
    answer = _plan(client_for(tree.member), body)
    assert answer.status_code == 400
    assert answer.json()["errors"] == {"target.nodes": ["unknown node: corp/ads"]}


@pytest.mark.parametrize(("body", "query", "field"), [
    ({**LAUNCH, "plugin": "nope"}, "?plan=1", "plugin"),
    ({**LAUNCH, "run_as": "postgres"}, "?plan=1", "run_as"),
    ({**LAUNCH, "control": {"batches": [1, "0%"]}}, "?plan=1", "control.batches[1]"),
    (LAUNCH, "?plan=maybe", "plan"),
    (LAUNCH, "?plan=1&dry=1", "dry"),
])
def test_bad_input_to_a_plan_names_the_field(api, tree, body, query, field):
    answer = _plan(api, body, query)
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["errors"]
    assert Task.objects.count() == 0
