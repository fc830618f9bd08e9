"""The review page in a real browser: the diff, and decisions only for permitted reviewers."""

import pytest
from django.conf import settings

from plugins.models import PluginVersion

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pending(make_version) -> PluginVersion:
    make_version("approved", body="#!/bin/sh\necho one\necho two\n")
    return make_version("pending", body="#!/bin/sh\necho one\necho TWO\n", timeout=42)


def test_reviewer_reads_the_diff_and_approves(login, live_server, people, pending):
    page = login("reviewer")
    page.goto(f"{live_server.url}/admin/plugins/pluginversion/review/")
    with page.expect_navigation():
        page.click(f"a[href$='/{pending.pk}/review/']")
    assert page.locator("#diff .del").all_inner_texts() == ["-echo two"]
    assert page.locator("#diff .add").all_inner_texts() == ["+echo TWO"]
    assert page.locator("#timeout").inner_text() == "42 s"
    page.screenshot(path=str(settings.VAR_DIR / "review-page.png"), full_page=True)
    page.fill("#comment", "looks right")
    with page.expect_navigation():
        page.click("button[value=approve]")
    pending.refresh_from_db()
    assert (pending.status, pending.reviewer, pending.review_comment) == (
        "approved", people.reviewer, "looks right"
    )


def test_the_author_sees_no_decision_buttons(login, live_server, people, pending):
    people.author.is_superuser = True  # may see everything, still may not review their own
    people.author.save()
    page = login("author")
    page.goto(f"{live_server.url}/admin/plugins/pluginversion/{pending.pk}/review/")
    assert page.locator("button[value=approve]").count() == 0
    assert page.locator("button[value=reject]").count() == 0
    assert page.locator("#refusal").is_visible()
