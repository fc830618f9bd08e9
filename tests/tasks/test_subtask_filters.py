"""A task's subtasks by state, datacenter, summary group and host name: the API's filters and
the console's host table read them through one selector."""

import pytest

from tasks.selectors import task_phase
from tests.factories import hosts_make, task_made

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(admin, builtins):
    hosts = hosts_make("dc1", 3, port=1) + hosts_make("dc2", 2, port=1)
    return task_made(admin, hosts, ["success", "failed", "success", "failed", "timeout"])


def _hosts(api, task, **query) -> list[str]:
    response = api.get(f"/api/v1/tasks/{task.pk}/subtasks/", query)
    assert response.status_code == 200, response.content
    return [row["host"] for row in response.json()["results"]]


def test_a_summary_groups_key_selects_its_subtasks(api, task):
    groups = api.get(f"/api/v1/tasks/{task.pk}/summary/").json()["groups"]
    failed = next(g for g in groups if g["status"] == "failed")
    assert failed["key"].startswith("failed:1:")
    assert _hosts(api, task, group=failed["key"]) == ["dc1-t001", "dc2-t000"]
    timeout = next(g for g in groups if g["status"] == "timeout")
    assert timeout["key"].startswith("timeout::")  # no exit code
    assert _hosts(api, task, group=timeout["key"]) == ["dc2-t001"]


def test_state_datacenter_and_host_name_filters_combine(api, task):
    assert _hosts(api, task, status="failed", datacenter="dc2") == ["dc2-t000"]
    assert _hosts(api, task, host="t00") == ["dc1-t000", "dc1-t001", "dc1-t002", "dc2-t000",
                                             "dc2-t001"]
    assert _hosts(api, task, host="dc2-t001") == ["dc2-t001"]


@pytest.mark.parametrize("query,field", [({"status": "done"}, "status"),
                                         ({"group": "success:zero:"}, "group")])
def test_a_bad_filter_is_refused_naming_it(api, task, query, field):
    response = api.get(f"/api/v1/tasks/{task.pk}/subtasks/", query)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


def test_a_stopped_task_whose_hosts_still_run_shows_as_stopping(task):
    task.status = "stopped"
    assert task_phase(task, {"running": 1, "stopped": 4}) == "stopping"
    assert task_phase(task, {"paused": 1}) == "stopping"
    assert task_phase(task, {"stopped": 5}) == "stopped"
    task.status = "running"
    assert task_phase(task, {"running": 5}) == "running"
