"""Fixtures shared by every test: users, API clients, and the real stack for integration tests."""

import os

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from ccs.stack import WORKER_PROCESSES, Stack, wait_for, workers_ready
from plugins.services import builtin_plugins_install


@pytest.fixture
def admin(db):
    return get_user_model().objects.create_superuser("root-admin", password="pw")


@pytest.fixture
def api(admin) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin)
    return client


@pytest.fixture
def builtins(db) -> None:
    """The built-in plugins (a transactional test's flush removes the migration's rows)."""
    builtin_plugins_install()


@pytest.fixture(scope="session")
def workers(django_db_setup, django_db_blocker):
    """The controller and one Celery worker per datacenter, as real processes on the test DB."""
    from celery import Celery
    from django.conf import settings

    db = connection.settings_dict
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    Celery(broker=settings.CELERY_BROKER_URL).control.purge()
    stack = Stack(env=env)
    for name in WORKER_PROCESSES:
        stack.start(name)
    try:
        wait_for(lambda: workers_ready(settings.CELERY_BROKER_URL), "celery workers", timeout=90)
        yield stack
    finally:
        stack.stop()
