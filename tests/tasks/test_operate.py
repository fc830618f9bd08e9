"""Pause, resume and stop through the API on subtasks that have not reached a host, quotas
and blocks: each legal request acts, each illegal one answers 409 and changes nothing."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from permissions.models import Node
from permissions.services.rights import right_grant, right_revoke
from tasks.models import Quota, SubTask, Task, TaskEvent
from tasks.services.sitter import resumes_fire
from tests.factories import hosts_make

pytestmark = pytest.mark.django_db
PING = {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"]}, "run_as": "root"}


@pytest.fixture
def hosts(builtins):
    return hosts_make("dc1", 3, port=1)


def _task(api: APIClient, **extra) -> dict:
    response = api.post("/api/v1/tasks/", {**PING, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _status(subtask_id: int) -> str:
    return SubTask.objects.get(pk=subtask_id).status


def _first_subtask(task: dict) -> int:
    return SubTask.objects.filter(task_id=task["id"]).order_by("id").first().pk


def test_subtask_pause_resume_stop_before_it_reaches_its_host(api, hosts):
    sub = _first_subtask(_task(api))
    url = f"/api/v1/subtasks/{sub}"
    assert api.post(f"{url}/pause/").status_code == 202
    assert _status(sub) == "held"
    assert api.post(f"{url}/resume/").status_code == 202
    assert _status(sub) == "pending"
    assert api.post(f"{url}/stop/").json()["status"] == "stopped"
    events = list(TaskEvent.objects.filter(subtask_id=sub).values_list("from_status", "to_status"))
    assert events == [("pending", "held"), ("held", "pending"), ("pending", "stopped")]


@pytest.mark.parametrize(
    ("state", "action"),
    [("stopped", "stop"), ("stopped", "pause"), ("stopped", "resume"), ("success", "pause"),
     ("success", "stop"), ("pending", "resume"), ("queued", "resume"), ("failed", "resume")],
)
def test_illegal_subtask_requests_answer_409_naming_the_state(api, hosts, state, action):
    sub = _first_subtask(_task(api))
    SubTask.objects.filter(pk=sub).update(status=state)
    before = TaskEvent.objects.count()
    response = api.post(f"/api/v1/subtasks/{sub}/{action}/")
    assert response.status_code == 409
    assert state in response.json()["detail"]
    assert response.json()["errors"] == {"status": [state]}
    assert _status(sub) == state
    assert TaskEvent.objects.count() == before


def test_task_pause_holds_resume_releases_stop_ends(api, hosts):
    task = _task(api)
    url = f"/api/v1/tasks/{task['id']}"
    paused = api.post(f"{url}/pause/").json()
    assert paused["status"] == "paused" and paused["counts"] == {"held": 3}
    assert "root-admin" in paused["paused_reason"]
    assert api.post(f"{url}/pause/").status_code == 202  # pausing a paused task is harmless
    resumed = api.post(f"{url}/resume/").json()
    assert resumed["status"] == "pending" and resumed["counts"] == {"pending": 3}
    assert api.post(f"{url}/resume/").status_code == 409
    stopped = api.post(f"{url}/stop/").json()
    assert stopped["status"] == "stopped" and stopped["counts"] == {"stopped": 3}
    assert stopped["finished_at"] is not None
    for action in ("pause", "resume", "stop"):
        response = api.post(f"{url}/{action}/")
        assert response.status_code == 409 and "stopped" in response.json()["detail"]


def test_stop_in_each_task_state(api, hosts):
    for status in ("pending", "running", "paused"):
        task = _task(api)
        Task.objects.filter(pk=task["id"]).update(status=status)
        assert api.post(f"/api/v1/tasks/{task['id']}/stop/").json()["status"] == "stopped"
    for final in ("succeeded", "failed", "stopped"):
        ended = _task(api)
        Task.objects.filter(pk=ended["id"]).update(status=final)
        response = api.post(f"/api/v1/tasks/{ended['id']}/stop/")
        assert response.status_code == 409 and final in response.json()["detail"]


def test_who_may_operate(api, hosts):
    task = _task(api)
    sub = _first_subtask(task)
    users = get_user_model().objects
    viewer, operator, outsider = (users.create_user(n) for n in ("viewer", "operator", "out"))
    assign_perm("view_node", viewer, Node.objects.get(path="corp"))
    assign_perm("operate_node", operator, Node.objects.get(path="corp/test"))
    clients = {}
    for user in (viewer, operator, outsider):
        clients[user.username] = APIClient()
        clients[user.username].force_authenticate(user)
    assert clients["out"].post(f"/api/v1/tasks/{task['id']}/pause/").status_code == 404
    assert clients["out"].post(f"/api/v1/subtasks/{sub}/pause/").status_code == 404
    assert clients["viewer"].post(f"/api/v1/tasks/{task['id']}/pause/").status_code == 403
    assert clients["viewer"].post(f"/api/v1/subtasks/{sub}/pause/").status_code == 403
    assert _status(sub) == "pending"
    assert clients["operator"].post(f"/api/v1/subtasks/{sub}/pause/").status_code == 202
    assert clients["operator"].post(f"/api/v1/tasks/{task['id']}/stop/").status_code == 202


def test_a_creator_whose_right_was_revoked_can_no_longer_steer_her_task(api, admin, hosts):
    creator = get_user_model().objects.create_user("creator")
    node = Node.objects.get(path="corp/test")
    right_grant(actor=admin, node=node, principal=creator, permission="operate_node")
    client = APIClient()
    client.force_authenticate(creator)
    task = _task(client)
    sub = _first_subtask(task)
    assert client.post(f"/api/v1/tasks/{task['id']}/pause/").status_code == 202
    right_revoke(actor=admin, node=node, principal=creator, permission="operate_node")
    for url in (f"/api/v1/tasks/{task['id']}", f"/api/v1/subtasks/{sub}"):
        for action in ("resume", "stop", "pause"):
            response = client.post(f"{url}/{action}/")
            assert response.status_code == 403, (url, action)  # she still sees her task
    assert client.get(f"/api/v1/tasks/{task['id']}/").status_code == 200
    assert Task.objects.get(pk=task["id"]).status == "paused"
    assert set(SubTask.objects.filter(task_id=task["id"]).values_list("status", flat=True)) == {
        "held"
    }


@pytest.mark.parametrize(
    ("quota", "code", "words"),
    [
        ({"tasks_per_minute": 1}, 429, "tasks_per_minute limit is 1"),
        ({"running_tasks": 1}, 429, "running_tasks limit is 1"),
        ({"hosts_per_task": 2}, 403, "hosts_per_task limit is 2"),
        ({"blocked": True, "blocked_reason": "incident 42"}, 403, "incident 42"),
    ],
)
def test_quotas_and_blocks(api, admin, hosts, quota, code, words):
    if "hosts_per_task" not in quota and "blocked" not in quota:
        _task(api)
    Quota.objects.create(user=admin, **quota)
    before = Task.objects.count()
    response = api.post("/api/v1/tasks/", PING, format="json")
    assert response.status_code == code
    assert words in response.json()["detail"]
    assert Task.objects.count() == before


def _at_pause_point(api: APIClient, due_in: float) -> int:
    """A task paused at a pause point whose auto-resume is due `due_in` seconds from now."""
    task_id = _task(api, control={"batches": [1, "100%"], "auto_resume": 5})["id"]
    Task.objects.filter(pk=task_id).update(
        status="paused", batch=1, paused_reason="pause point: batch 1 of 2 done",
        resume_at=timezone.now() + timedelta(seconds=due_in))
    return task_id


def test_a_due_auto_resume_fires_once_however_many_sitters_look(api, hosts):
    task_id = _at_pause_point(api, due_in=-1)
    later = _at_pause_point(api, due_in=60)
    assert resumes_fire(timezone.now()) == 1
    assert resumes_fire(timezone.now()) == 0  # a second sitter finds nothing due
    task = Task.objects.get(pk=task_id)
    assert (task.status, task.resume_at, task.paused_reason) == ("pending", None, "")
    assert Task.objects.get(pk=later).status == "paused"


def test_an_operators_pause_at_a_pause_point_cancels_its_auto_resume(api, hosts):
    task_id = _at_pause_point(api, due_in=-1)
    assert api.post(f"/api/v1/tasks/{task_id}/pause/").status_code == 202
    assert resumes_fire(timezone.now()) == 0
    task = Task.objects.get(pk=task_id)
    assert (task.status, task.resume_at) == ("paused", None)
    assert task.paused_reason.startswith("paused by")
