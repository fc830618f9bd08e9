"""The console's people (a member who may operate corp/test, an outsider with no rights, a
staff reviewer) and browser pages signed in to the real web process."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model

from permissions.services import node_ensure, right_grant

ROOT = Path(__file__).resolve().parents[2]
# The README's screenshots are refreshed in docs/ when CCS_SCREENSHOTS=1; otherwise they go to
# var/, so that a test run leaves the tree as it found it.
SHOTS = ROOT / ("docs" if os.environ.get("CCS_SCREENSHOTS") == "1" else "var")


@pytest.fixture
def people(admin):
    users = get_user_model().objects
    team = SimpleNamespace(
        admin=admin,
        member=users.create_user("member", password="pw"),
        outsider=users.create_user("outsider", password="pw"),
    )
    right_grant(actor=admin, node=node_ensure(path="corp/test"), principal=team.member,
                permission="operate_node")
    return team


@pytest.fixture
def console(chromium, web):
    """`console(username)`: a browser page signed in to the console as that user (password
    "pw"), on the root page."""
    pages = []

    def open_as(username: str):
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        pages.append(page)
        page.goto(f"{web}/")
        assert "/login/" in page.url  # the root asks to sign in, then comes back
        page.fill("#id_username", username)
        page.fill("#id_password", "pw")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.url == f"{web}/", page.url
        page.on("dialog", lambda dialog: dialog.accept())
        return page

    yield open_as
    for page in pages:
        page.close()


def screenshot(page, name: str) -> None:
    """A screenshot of the README's (see SHOTS)."""
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)
