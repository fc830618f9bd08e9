"""Logins are throttled: after a run of wrong passwords from one address (or for one account),
even the right password is refused for a while, on the API token endpoint and the admin."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db
TOKEN = "/api/v1/auth/token"


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.AXES_FAILURE_LIMIT = 3  # each wrong password costs a real hash


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", password="right-password")


def test_token_logins_are_refused_after_a_run_of_wrong_passwords(alice, settings):
    client = APIClient(REMOTE_ADDR="192.0.2.10")
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        wrong = client.post(TOKEN, {"username": "alice", "password": "guess"}, format="json")
        assert wrong.status_code == 400
    answered = [client.post(TOKEN, {"username": "alice", "password": p}, format="json")
                for p in ("guess", "right-password")]
    assert [r.status_code for r in answered] == [429, 429]
    refused = answered[-1]
    assert "token" not in refused.json()
    assert refused.json()["detail"].startswith("too many failed logins")
    assert int(refused["Retry-After"]) > 0


def test_a_locked_account_is_locked_from_every_address(alice, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        APIClient(REMOTE_ADDR=f"198.51.100.{n}").post(
            TOKEN, {"username": "alice", "password": "guess"}, format="json")
    elsewhere = APIClient(REMOTE_ADDR="203.0.113.7").post(
        TOKEN, {"username": "alice", "password": "right-password"}, format="json")
    assert elsewhere.status_code == 429
    other = get_user_model().objects.create_user("bob", password="bobs-password")
    ok = APIClient(REMOTE_ADDR="203.0.113.7").post(
        TOKEN, {"username": other.username, "password": "bobs-password"}, format="json")
    assert ok.status_code == 200 and ok.json()["token"]


def test_a_good_login_before_the_limit_still_works(alice, settings):
    client = APIClient(REMOTE_ADDR="192.0.2.20")
    for _ in range(settings.AXES_FAILURE_LIMIT - 2):
        client.post(TOKEN, {"username": "alice", "password": "guess"}, format="json")
    ok = client.post(TOKEN, {"username": "alice", "password": "right-password"}, format="json")
    assert ok.status_code == 200


def test_admin_logins_are_throttled_too(alice, settings):
    alice.is_staff = True
    alice.save()
    browser = Client(REMOTE_ADDR="192.0.2.30")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        page = browser.post("/admin/login/", {"username": "alice", "password": "guess"})
        assert page.status_code in (200, 429)
    page = browser.post("/admin/login/", {"username": "alice", "password": "right-password"})
    assert page.status_code == 429
    assert "too many failed logins" in page.content.decode()
    assert "_auth_user_id" not in browser.session
