"""Steering from the console in headless Chromium: one host paused and resumed, a task
stopped, the failed hosts run again; and who may see and steer what."""

import re
import time

import pytest
from playwright.sync_api import expect

from permissions.services import node_ensure, right_grant
from tasks.models import SubTask, Task
from tasks.services import ControlData, task_create, task_stop
from tests.factories import hosts_make, plugin_approved, task_made
from tests.web.conftest import screenshot

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _launch(user, plugin: str, params: dict) -> Task:
    return task_create(actor=user, plugin=plugin, version=None, params=params,
                       nodes=["corp/test"], hosts=[], run_as="root", control=ControlData())


def _ended(task: Task, timeout: float = 60) -> Task:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task.refresh_from_db()
        if task.finished_at:
            return task
        time.sleep(0.1)
    pytest.fail(f"task {task.pk} still {task.status}")


def _row(host: str, status: str | None = None) -> str:
    return f"#hosts tr[data-host='{host}']" + (f"[data-status='{status}']" if status else "")


def test_pause_one_running_host_and_resume_it(console, web, people, workers, fleet):
    task = _launch(people.member, "sleep", {"seconds": 30})
    page = console("member")
    page.goto(f"{web}/tasks/{task.pk}/")
    try:
        page.wait_for_selector(_row("dc1-t004", "running"), timeout=30_000)
        page.click(f"{_row('dc1-t004')} button[data-op=pause]")
        # Shown as asked until its agent confirms, then as it is.
        expect(page.locator(f"{_row('dc1-t004')} .state")).to_have_text(re.compile("paus"))
        page.wait_for_selector(_row("dc1-t004", "paused"), timeout=30_000)
        assert page.locator(f"{_row('dc1-t004')} .state").inner_text() == "paused"
        assert SubTask.objects.get(task=task, host__hostname="dc1-t004").status == "paused"
        assert page.locator("#hosts tr[data-status='paused']").count() == 1  # that one only
        page.click(f"{_row('dc1-t004')} button[data-op=resume]")
        page.wait_for_selector(_row("dc1-t004", "running"), timeout=30_000)
        assert page.locator(f"{_row('dc1-t004')} .state").inner_text() == "running"
    finally:
        task_stop(actor=people.member, task_id=task.pk)
        _ended(task)


def test_stop_a_task_from_its_page(console, web, people, workers, fleet):
    task = _launch(people.member, "sleep", {"seconds": 30})
    page = console("member")
    page.goto(f"{web}/tasks/{task.pk}/")
    page.wait_for_function("document.querySelector('#counts').innerText.includes('10 running')",
                           timeout=30_000)
    page.click("#task-stop")  # confirmed in the dialog
    # Until every agent has killed its job the task says so, then it is stopped.
    expect(page.locator("#task-status")).to_have_text(re.compile("stopping|stopped"))
    page.wait_for_function("document.querySelector('#counts').innerText.includes('10 stopped')",
                           timeout=30_000)
    assert page.locator("#task-status").inner_text() == "stopped"
    assert page.locator("#task-stop").count() == 0
    assert set(SubTask.objects.filter(task=task).values_list("status", flat=True)) == {"stopped"}


def test_rerun_the_failed_hosts_of_a_task_as_a_new_task(console, web, people, workers, fleet):
    plugin_approved("disks", 'case "$CCS_HOST_ID" in *t003|*t007) echo "disk full"; exit 1;; '
                             'esac\necho ok\n')
    task = _ended(_launch(people.member, "disks", {}))
    page = console("member")
    page.goto(f"{web}/tasks/{task.pk}/")
    groups = [" ".join(t.split()) for t in page.locator("#group-table tr").all_inner_texts()]
    assert groups[0].startswith("8 hosts success exit 0 ok")
    assert groups[1].startswith("2 hosts failed exit 1 disk full")
    screenshot(page, "console-failures.png")
    page.click("#group-table tr[data-status=failed] .show-group")
    page.wait_for_selector("#hosts .filter-note")
    shown = page.locator("#hosts tr[data-subtask]").evaluate_all(
        "rows => rows.map(r => r.dataset.host)")
    assert shown == ["dc1-t003", "dc1-t007"]
    with page.expect_navigation():
        page.click("#rerun-button")
    rerun = Task.objects.latest("id")
    assert page.url.endswith(f"/tasks/{rerun.pk}/") and rerun.pk != task.pk
    hosts = SubTask.objects.filter(task=rerun).values_list("host__hostname", flat=True)
    assert sorted(hosts) == ["dc1-t003", "dc1-t007"]
    assert (rerun.plugin_version, rerun.params, rerun.creator) == (
        task.plugin_version, task.params, people.member)
    _ended(rerun)


def test_outsiders_get_404_and_viewers_may_not_steer(console, web, people, builtins):
    hosts = hosts_make("dc1", 3, port=1)
    task = task_made(people.member, hosts, ["success", "failed", "running"])
    viewer = people.outsider.__class__.objects.create_user("viewer", password="pw")
    right_grant(actor=people.admin, node=node_ensure(path="corp/test"), principal=viewer,
                permission="view_node")
    page = console("outsider")
    for path in (f"/tasks/{task.pk}/", f"/tasks/{task.pk}/head/", f"/tasks/{task.pk}/hosts/",
                 f"/tasks/{task.pk}/groups/", f"/hosts/{hosts[0].hostname}/"):
        response = page.goto(f"{web}{path}")
        assert response.status == 404, path
    assert "nothing you may see" in page.locator("#not-found").inner_text()
    assert _post(page, f"{web}/tasks/{task.pk}/stop/").status == 404
    assert _post(page, f"{web}/api/v1/tasks/{task.pk}/stop/").status == 404

    page = console("viewer")
    assert page.goto(f"{web}/tasks/{task.pk}/").status == 200
    assert page.locator("#task-stop").count() == 0
    assert page.locator("#hosts button").count() == 0
    refused = _post(page, f"{web}/tasks/{task.pk}/stop/")
    assert refused.status == 403 and "may not operate" in refused.text()
    assert Task.objects.get(pk=task.pk).status == "running"


def _post(page, url: str):
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    return page.request.post(url, headers={"X-CSRFToken": token, "Referer": url})
