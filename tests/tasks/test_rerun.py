"""Re-run: a new task on the hosts that failed, timed out or were lost (or the states asked
for), with the same version, params, account and control data, checked again now."""

import pytest
from django.contrib.auth import get_user_model
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from permissions.models import Node
from plugins.models import PluginVersion
from tasks.models import Quota, SubTask, Task
from tests.factories import hosts_make, plugin_approved

pytestmark = pytest.mark.django_db
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}


@pytest.fixture
def ended(api, builtins) -> Task:
    """A task over five hosts, ended: two succeeded, one failed, one timed out, one lost."""
    hosts_make("dc1", 5, port=1)
    plugin_approved("count", "echo $CCS_PARAM_N\n", run_as=("root", "nobody"),
                    params_schema=SCHEMA)
    created = api.post("/api/v1/tasks/", {
        "plugin": "count", "params": {"n": 3}, "target": {"nodes": ["corp/test"]},
        "run_as": "nobody",
        "control": {"batches": [1, "100%"], "failure_threshold": "50%", "timeout": 30,
                    "concurrency": 2, "priority": "high"},
    }, format="json")
    assert created.status_code == 201, created.content
    subtasks = SubTask.objects.filter(task_id=created.json()["id"]).order_by("host__hostname")
    for subtask, status in zip(subtasks, ["success", "success", "failed", "timeout", "lost"],
                               strict=True):
        SubTask.objects.filter(pk=subtask.pk).update(status=status)
    Task.objects.filter(pk=created.json()["id"]).update(status="failed")
    return Task.objects.get(pk=created.json()["id"])


def _hosts(task_id: int) -> list[str]:
    return sorted(SubTask.objects.filter(task_id=task_id).values_list("host__hostname", flat=True))


def test_rerun_takes_the_failed_hosts_and_everything_else_from_the_task(api, ended):
    response = api.post(f"/api/v1/tasks/{ended.pk}/rerun/", format="json")
    assert response.status_code == 201, response.content
    new = response.json()
    assert new["id"] != ended.pk and new["status"] == "pending"
    assert (new["plugin"], new["version"], new["params"], new["run_as"]) == (
        "count", 1, {"n": 3}, "nobody")
    assert new["control"] == {"timeout": 30, "priority": "high", "concurrency": 2,
                              "batches": [1, "100%"], "failure_threshold": "50%",
                              "auto_resume": None}
    assert new["total_hosts"] == 3 and new["counts"] == {"pending": 3}
    assert _hosts(new["id"]) == ["dc1-t002", "dc1-t003", "dc1-t004"]


def test_rerun_of_chosen_states(api, ended):
    response = api.post(f"/api/v1/tasks/{ended.pk}/rerun/", {"statuses": ["success"]},
                        format="json")
    assert response.status_code == 201, response.content
    assert _hosts(response.json()["id"]) == ["dc1-t000", "dc1-t001"]


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"statuses": ["running"]}, "statuses.0", '"running" is not a valid choice'),
    ({"statuses": []}, "statuses", "may not be empty"),
    ({"statuses": "failed"}, "statuses", "Expected a list"),
    ({"statuses": ["stopped"]}, "statuses", "no host of task"),
    ({"hosts": ["x"]}, "hosts", "unknown field"),
])
def test_bad_requests_name_the_field_and_create_nothing(api, ended, body, field, words):
    response = api.post(f"/api/v1/tasks/{ended.pk}/rerun/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()
    assert words in response.json()["detail"] + str(response.json()["errors"])
    assert Task.objects.count() == 1


def test_rights_quota_and_approval_are_checked_now(api, admin, ended):
    user = get_user_model().objects.create_user("viewer")
    assign_perm("view_node", user, Node.objects.get(path="corp"))
    viewer = APIClient()
    viewer.force_authenticate(user)
    refused = viewer.post(f"/api/v1/tasks/{ended.pk}/rerun/", format="json")
    assert refused.status_code == 403
    assert "operate 3 of the target hosts" in refused.json()["detail"]
    Quota.objects.create(user=admin, hosts_per_task=2)
    refused = api.post(f"/api/v1/tasks/{ended.pk}/rerun/", format="json")
    assert refused.status_code == 403 and "hosts_per_task limit is 2" in refused.json()["detail"]
    Quota.objects.filter(user=admin).delete()
    PluginVersion.objects.filter(pk=ended.plugin_version_id).update(status="retired")
    refused = api.post(f"/api/v1/tasks/{ended.pk}/rerun/", format="json")
    assert refused.status_code in (400, 409) and "retired" in refused.json()["detail"]
    assert Task.objects.count() == 1
    outsider = APIClient()
    outsider.force_authenticate(get_user_model().objects.create_user("outsider"))
    assert outsider.post(f"/api/v1/tasks/{ended.pk}/rerun/").status_code == 404


def test_a_failure_threshold_given_as_a_count_is_kept(api, builtins):
    hosts_make("dc1", 2, port=1)
    created = api.post("/api/v1/tasks/", {
        "plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root",
        "control": {"failure_threshold": 2},
    }, format="json").json()
    SubTask.objects.filter(task_id=created["id"]).update(status="failed")
    response = api.post(f"/api/v1/tasks/{created['id']}/rerun/", format="json")
    assert response.status_code == 201, response.content
    assert response.json()["control"]["failure_threshold"] == 2
