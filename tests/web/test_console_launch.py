"""Launching a task from the console and watching it to the end, in headless Chromium, on
the real web process, workers and agents."""

import re

import pytest

from permissions.models import Host
from plugins.services import plugin_create, plugin_version_create, plugin_version_submit
from tasks.models import Task
from tests.factories import hosts_make
from tests.web.conftest import screenshot

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
FINISHED = re.compile(r"succeeded")


def test_the_root_signs_a_user_in_and_back_to_the_console(console, people, builtins):
    page = console("member")
    assert page.locator("text=Launch a task").is_visible()
    assert page.locator("nav >> text=Admin").count() == 0  # not staff: the console is enough
    page.goto(page.url + "launch/")
    names = page.locator(".plugins b").all_inner_texts()
    assert {"ping", "sleep", "sysinfo"} <= set(names)


def test_member_launches_sleep_on_a_subtree_and_watches_it_finish(
    console, people, workers, fleet
):
    page = console("member")
    page.click("text=Launch a task")
    page.click(".plugins a:has-text('sleep')")
    assert "Sleeps" in page.locator("#plugin-description").inner_text()
    # The tree shows the member's nodes with their host counts.
    tree = page.locator("#tree li").all_inner_texts()
    assert [" ".join(t.split()) for t in tree] == [
        "test 10 hosts", "dc1 10 hosts"
    ]
    # Nothing filled in: each error is shown at its field.
    with page.expect_navigation():
        page.click("#launch-button")
    assert page.locator("[data-field='params.seconds']").inner_text() == "This field is required."
    # Errors the service finds are shown at their field too.
    page.fill("[name='params.seconds']", "2")
    page.fill("[name='control.batches']", "1, lots")
    page.check("#tree input[value='corp/test/dc1']")
    with page.expect_navigation():
        page.click("#launch-button")
    assert "lots" in page.locator("[data-field='control.batches']").inner_text()
    assert page.locator("[name='params.seconds']").input_value() == "2"  # kept
    page.fill("[name='control.concurrency']", "5")
    page.wait_for_selector("#target-hosts")
    assert page.locator("#target-count").inner_text() == "This target is 10 hosts."
    screenshot(page, "console-launch.png")
    page.fill("[name='control.batches']", "")
    with page.expect_navigation():
        page.click("#launch-button")
    task = Task.objects.get()
    assert page.url.endswith(f"/tasks/{task.pk}/")

    # The bar moves: five hosts run, then five more, and the counts follow.
    seen = set()
    running_shot = False
    for _ in range(600):
        counts = dict(_counts(page))
        seen.add(counts.get("success", 0))
        if counts.get("running") and not running_shot and _table_agrees(page, counts):
            screenshot(page, "console-running.png")
            running_shot = True
        if FINISHED.fullmatch(page.locator("#task-status").inner_text()):
            break
        page.wait_for_timeout(100)
    assert FINISHED.fullmatch(page.locator("#task-status").inner_text())
    page.wait_for_function("document.querySelector('#counts').innerText.includes('10 success')")
    assert running_shot and 5 in seen and {0, 10} & seen
    page.wait_for_selector(".elapsed[data-end]")
    assert re.fullmatch(r"\d+s", page.locator(".elapsed").inner_text())
    page.wait_for_function("document.querySelectorAll('#group-table tr').length == 1 &&"
                           " document.querySelector('#group-table').innerText.includes('slept')")
    group = " ".join(page.locator("#group-table tr").inner_text().split())
    assert group.startswith("10 hosts success exit 0 slept 2 s")


def _table_agrees(page, counts: dict[str, int]) -> bool:
    states = page.locator("#hosts tr[data-subtask]").evaluate_all(
        "rows => rows.map(r => r.dataset.status)")
    groups = page.locator("#group-table tr").evaluate_all("rows => rows.map(r => r.dataset.status)")
    return {s: states.count(s) for s in set(states)} == counts and set(groups) == set(counts)


def _counts(page) -> list[tuple[str, int]]:
    """The counts list, read in one go (the head may be swapped between two reads)."""
    return page.locator("#counts li").evaluate_all(
        "items => items.map(li => [li.dataset.state,"
        " Number(li.querySelector('b').innerText.replace(/,/g, ''))])")


def test_a_staff_user_sees_how_many_versions_wait_for_review(console, people, builtins):
    author = people.admin
    plugin = plugin_create(actor=author, name="hello", description="says hello")
    version = plugin_version_create(actor=author, plugin_id=plugin.pk, interpreter="sh",
                                    body="echo hello\n", run_as=["root"])
    plugin_version_submit(actor=author, version_id=version.pk)
    page = console("root-admin")
    assert page.locator("#review-waiting").inner_text() == "1"
    with page.expect_navigation():
        page.click("#review-link")
    assert page.url.endswith("/admin/plugins/pluginversion/review/")
    assert "hello v1" in page.locator("#review-queue").inner_text()


def test_the_plan_button_shows_what_a_launch_would_do_and_creates_nothing(
    console, people, builtins
):
    hosts_make("dc1", 3, port=1)
    hosts_make("dc2", 2, port=1)
    Host.objects.filter(hostname="dc2-t001").update(status=Host.Status.OFFLINE)
    page = console("member")
    page.goto(page.url + "launch/ping/")
    page.check("#tree input[value='corp/test']")
    page.fill("[name='control.batches']", "1, 100%")
    with page.expect_navigation():
        page.click("#plan-button")
    assert page.locator("#plan-verdict").inner_text() == "This launch would start"
    assert page.locator("#plan-hosts").inner_text() == "5"
    assert page.locator("#plan-datacenters").inner_text() == "dc1: 3 · dc2: 2"
    assert page.locator("#plan-batches").inner_text() == "1, 4"
    assert page.locator("#plan-unreachable").inner_text() == "1: dc2-t001"
    assert page.locator("[name='control.batches']").input_value() == "1, 100%"  # kept
    assert not Task.objects.exists()
    with page.expect_navigation():
        page.click("#launch-button")
    assert Task.objects.get().total_hosts == 5
