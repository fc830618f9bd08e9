"""Batches, concurrency, the failure threshold and priority queues, on real workers and agents."""

import time

import pytest

from tasks.models import Task, TaskEvent
from tests.factories import plugin_approved

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
BODY_SLEEP = 'sleep "${CCS_PARAM_SECONDS:-0.2}"\necho slept\n'


def _create(api, plugin: str, params: dict | None = None, **control) -> int:
    response = api.post("/api/v1/tasks/", {
        "plugin": plugin, "params": params or {}, "target": {"nodes": ["corp/test"]},
        "run_as": "root", "control": control,
    }, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _wait(task_id: int, statuses: tuple[str, ...], timeout: float = 60) -> Task:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = Task.objects.get(pk=task_id)
        if task.status in statuses:
            return task
        time.sleep(0.05)
    pytest.fail(f"task {task_id} stayed {Task.objects.get(pk=task_id).status}")


def _ended(task_id: int) -> int:
    return TaskEvent.objects.filter(task_id=task_id, to_status__in=["success", "failed"]).count()


def _most_running_at_once(task_id: int) -> int:
    running = most = 0
    for old, new in TaskEvent.objects.filter(task_id=task_id).order_by("seq").values_list(
        "from_status", "to_status"
    ):
        running += (new == "running") - (old == "running")
        most = max(most, running)
    return most


def test_batches_pause_after_one_then_half_then_run_the_rest(api, workers, fleet):
    task_id = _create(api, "ping", batches=[1, "50%", "100%"])
    first = _wait(task_id, ("paused",))
    assert _ended(task_id) == 1
    assert "batch 1 of 3" in first.paused_reason
    api.post(f"/api/v1/tasks/{task_id}/resume/")
    second = _wait(task_id, ("paused",))
    assert _ended(task_id) == 6
    assert "batch 2 of 3" in second.paused_reason
    api.post(f"/api/v1/tasks/{task_id}/resume/")
    assert _wait(task_id, ("succeeded",)).status == "succeeded"
    assert _ended(task_id) == 10


def test_auto_resume_goes_on_by_itself_when_nothing_failed(api, workers, fleet):
    task_id = _create(api, "ping", batches=[1, "100%"], auto_resume=1)
    _wait(task_id, ("paused",))
    assert _wait(task_id, ("succeeded",)).status == "succeeded"
    assert _ended(task_id) == 10


def test_concurrency_two_never_runs_more_than_two(api, workers, fleet):
    plugin_approved("nap", BODY_SLEEP)
    task_id = _create(api, "nap", {"seconds": 0.3}, concurrency=2)
    _wait(task_id, ("succeeded",))
    assert _ended(task_id) == 10
    assert _most_running_at_once(task_id) == 2


def test_failure_threshold_pauses_after_the_second_failure(api, workers, fleet, tmp_path):
    counter = tmp_path / "runs"
    # The first three runs fail; concurrency 1 makes the order of failures certain.
    plugin_approved("flaky", f'n=$(($(cat {counter} 2>/dev/null || echo 0) + 1))\n'
                             f'echo $n > {counter}\n[ $n -gt 3 ] || exit 1\necho ok\n')
    task_id = _create(api, "flaky", concurrency=1, failure_threshold=2)
    task = _wait(task_id, ("paused",))
    assert "failure threshold 2 reached: 2 of 10 hosts failed" in task.paused_reason
    assert TaskEvent.objects.filter(task_id=task_id, to_status="failed").count() == 2
    assert _ended(task_id) == 2
    api.post(f"/api/v1/tasks/{task_id}/resume/")
    task = _wait(task_id, ("failed", "paused"))
    assert task.status == "failed", task.paused_reason  # one more failure is under the threshold
    assert TaskEvent.objects.filter(task_id=task_id, to_status="failed").count() == 3


def test_high_priority_is_not_delayed_by_a_flood_of_normal_work(api, workers, fleet):
    plugin_approved("nap", BODY_SLEEP)
    flood = [_create(api, "nap", {"seconds": 4}) for _ in range(10)]
    urgent = _create(api, "ping", priority="high")
    done = _wait(urgent, ("succeeded",), timeout=30)
    assert _ended(urgent) == 10
    for task_id in flood:
        task = _wait(task_id, ("succeeded",), timeout=60)
        assert task.finished_at > done.finished_at
