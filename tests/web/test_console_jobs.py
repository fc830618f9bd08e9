"""Saved jobs in the console, in headless Chromium on the real web process: save one from the
launch form, run it, read its runs, change it, delete it."""

import pytest

from jobs.models import JobAudit, SavedJob
from tasks.models import Task
from tests.factories import hosts_make

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_member_saves_runs_edits_and_deletes_a_job(console, people, builtins, web):
    hosts_make("dc1", 3, port=1)
    page = console("member")
    page.goto(f"{web}/launch/ping/")
    page.check("#tree input[value='corp/test']")
    with page.expect_navigation():
        page.click("#save-job-button")  # no name yet
    assert "name" in page.locator("[data-field='job.name']").inner_text()
    page.fill("[name='job.name']", "ping-test")
    page.fill("[name='job.description']", "is test up?")
    page.fill("[name='control.batches']", "1, 100%")
    page.check("[name='job.newest']")
    with page.expect_navigation():
        page.click("#save-job-button")
    job = SavedJob.objects.get()
    assert page.url == f"{web}/jobs/{job.pk}/"
    assert job.launch["version"] is None and job.launch["control"]["batches"] == [1, "100%"]
    assert "newest approved at each run" in page.locator("#job-facts").inner_text()

    with page.expect_navigation():
        page.click("#job-run")
    task = Task.objects.get()
    assert page.url == f"{web}/tasks/{task.pk}/" and task.total_hosts == 3
    page.goto(f"{web}/jobs/")
    assert "ping-test" in page.locator("#jobs").inner_text()
    with page.expect_navigation():
        page.click("#jobs a:has-text('ping-test')")
    row = " ".join(page.locator("#job-runs tbody tr").inner_text().split())
    assert row.startswith(f"{task.pk} {task.status} v1 manual member 3")

    with page.expect_navigation():
        page.click("#job-edit")
    assert page.locator("[name='job.name']").input_value() == "ping-test"
    assert page.locator("#tree input[value='corp/test']").is_checked()
    assert page.locator("[name='control.batches']").input_value() == "1, 100%"
    page.fill("[name='control.batches']", "2, 100%")
    with page.expect_navigation():
        page.click("#save-job-button")
    assert page.url == f"{web}/jobs/{job.pk}/"
    job.refresh_from_db()
    assert job.launch["control"]["batches"] == [2, "100%"]

    with page.expect_navigation():
        page.click("#job-delete")  # the confirm dialog is accepted
    assert page.url == f"{web}/jobs/"
    assert "No saved job you can see." in page.locator("#jobs").inner_text()
    assert Task.objects.count() == 1
    actions = list(JobAudit.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["create", "run", "edit", "delete"]


def test_a_job_out_of_view_is_not_found(console, people, builtins, web):
    hosts_make("dc1", 1, port=1)
    job = SavedJob.objects.create(name="theirs", owner=people.admin, launch={
        "plugin": "ping", "params": {}, "target": {"nodes": ["corp/test"], "hosts": []},
        "run_as": "root"})
    page = console("outsider")
    assert page.goto(f"{web}/jobs/{job.pk}/").status == 404
    assert page.goto(f"{web}/launch/ping/?job={job.pk}").status == 404
    page.goto(f"{web}/jobs/")
    assert "theirs" not in page.locator("#jobs").inner_text()


def test_member_schedules_a_job_sees_the_next_times_pauses_and_deletes(
    console, people, builtins, web
):
    hosts_make("dc1", 1, port=1)
    page = console("member")
    page.goto(f"{web}/launch/ping/")
    page.check("#tree input[value='corp/test']")
    page.fill("[name='job.name']", "nightly")
    with page.expect_navigation():
        page.click("#save-job-button")
    page.fill("#schedule-add [name='cron']", "0 25 * * *")
    with page.expect_navigation():
        page.click("#schedule-add-button")
    assert "five fields" in page.locator("#schedule-add [data-field='cron']").inner_text()
    page.fill("#schedule-add [name='cron']", "0 3 * * *")
    page.fill("#schedule-add [name='timezone']", "Asia/Shanghai")
    with page.expect_navigation():
        page.click("#schedule-add-button")
    row = page.locator("#job-schedules tr[data-schedule]")
    assert "0 3 * * * (Asia/Shanghai)" in row.inner_text()
    upcoming = row.locator(".upcoming").inner_text().split(" · ")
    assert len(upcoming) == 3 and all(t.endswith("03:00 CST") for t in upcoming), upcoming
    assert "not yet" in row.locator(".last").inner_text()
    with page.expect_navigation():
        row.locator("button:has-text('pause')").click()
    assert row.locator(".upcoming").inner_text() == "paused"
    with page.expect_navigation():
        row.locator("button:has-text('delete')").click()
    assert "It runs only when asked." in page.locator("#job-schedules").inner_text()
