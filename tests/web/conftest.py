"""A real headless Chromium (Debian's, driven by Playwright) against the live server."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags this machine's closed network needs; see the README.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium():
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread while
    it is open, and the agent tests (which pytest-django runs last) start their own."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop; the ORM calls our tests make beside it are
    # still plain synchronous calls in this thread.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def login(chromium, live_server):
    """A browser page logged in to the admin as the given user (password "pw")."""
    pages = []

    def open_as(username: str):
        page = chromium.new_page()
        pages.append(page)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", "pw")
        with page.expect_navigation():
            page.click("input[type=submit]")
        return page

    yield open_as
    for page in pages:
        page.close()
