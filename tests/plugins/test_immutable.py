"""An approved version never changes: not by the API, the admin, a service call, nor a raw
UPDATE (the database guard, on PostgreSQL and on the embedded SQLite)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.db import DatabaseError, IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from ccs.errors import Conflict
from plugins import services
from plugins.models import Plugin, PluginVersion
from tests.plugins.conftest import client_for

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _unchanged(version: PluginVersion) -> None:
    fresh = PluginVersion.objects.get(pk=version.pk)
    fields = ("body", "sha256", "signature", "run_as", "timeout", "interpreter", "status")
    assert [getattr(fresh, f) for f in fields] == [getattr(version, f) for f in fields]


@pytest.fixture(params=["approved", "retired"])
def frozen(request, make_version) -> PluginVersion:
    return make_version(request.param)


def test_api_cannot_change_an_approved_version(people, frozen):
    for user in (people.author, people.reviewer):
        response = client_for(user).patch(
            f"/api/v1/plugin-versions/{frozen.pk}/", {"body": "rm -rf /\n"}, format="json"
        )
        assert response.status_code in (403, 409), response.content
    response = client_for(people.author).patch(
        f"/api/v1/plugin-versions/{frozen.pk}/", {"run_as": ["root", "postgres"]}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["errors"] == {"status": [f"is {frozen.status}, must be draft"]}
    _unchanged(frozen)


def test_service_cannot_change_an_approved_version(people, frozen):
    with pytest.raises(Conflict, match=f"is {frozen.status}"):
        services.plugin_version_update(actor=people.author, version_id=frozen.pk, timeout=999)
    _unchanged(frozen)


def test_admin_cannot_change_an_approved_version(admin, frozen):
    browser = Client()
    browser.force_login(admin)
    url = f"/admin/plugins/pluginversion/{frozen.pk}/change/"
    page = browser.get(url)
    assert page.status_code == 200
    assert b'name="body"' not in page.content  # shown read-only
    posted = browser.post(url, {
        "interpreter": "sh", "body": "echo owned\n", "params_schema": "{}",
        "run_as": '["root"]', "timeout": "60",
    })
    assert posted.status_code == 403
    _unchanged(frozen)


@pytest.mark.parametrize(
    "change",
    [
        {"body": "echo tampered\n"},
        {"sha256": "0" * 64},
        {"signature": "AAAA"},
        {"run_as": ["root", "postgres"]},
        {"timeout": 99999},
        {"interpreter": "bash"},
        {"params_schema": {}},
        {"number": 42},
        {"reviewer": None},
        {"review_comment": "edited"},
        {"status": "draft"},
        {"status": "pending"},
    ],
)
def test_raw_update_is_refused_by_the_database(frozen, change):
    with pytest.raises(IntegrityError), transaction.atomic():
        PluginVersion.objects.filter(pk=frozen.pk).update(**change)
    _unchanged(frozen)


def test_raw_sql_is_refused_too(frozen):
    from django.db import connection

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE plugins_pluginversion SET body = 'x' WHERE id = %s", [frozen.pk])
    _unchanged(frozen)


def test_database_allows_retiring_once_and_nothing_after(make_version):
    version = make_version("approved")
    rows = PluginVersion.objects.filter(pk=version.pk)
    assert rows.update(status="retired", retired_at=timezone.now()) == 1
    for change in ({"status": "approved"}, {"retired_at": None}):
        with pytest.raises(IntegrityError), transaction.atomic():
            rows.update(**change)


def test_drafts_and_pending_versions_are_not_guarded(make_version):
    draft = make_version("draft")
    assert PluginVersion.objects.filter(pk=draft.pk).update(timeout=7) == 1


def test_plugin_names_never_change(plugin):
    with pytest.raises(IntegrityError), transaction.atomic():
        Plugin.objects.filter(pk=plugin.pk).update(name="renamed")
    assert Plugin.objects.filter(pk=plugin.pk).update(description="new words") == 1


SQLITE_CHECK = textwrap.dedent("""
    from django.db import IntegrityError, connection, transaction
    from django.utils import timezone
    from plugins.models import PluginVersion
    rows = PluginVersion.objects.filter(plugin__name="ping", number=1)
    assert rows.get().status == "approved"
    for change in ({"body": "x"}, {"status": "draft"}, {"run_as": ["daemon"]},
                   {"signature": ""}, {"review_comment": "edited"}):
        try:
            with transaction.atomic():
                rows.update(**change)
        except IntegrityError:
            continue
        raise SystemExit(f"not refused: {change}")
    assert rows.update(status="retired", retired_at=timezone.now()) == 1
    print("guarded", connection.vendor)
""")


def _manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_sqlite_embedded_default_is_guarded_and_survives_table_rebuilds(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}"}
    _manage(env, "migrate", "-v0")
    assert "guarded sqlite" in _manage(env, "shell", "-c", SQLITE_CHECK.replace(
        'plugin__name="ping"', 'plugin__name="sysinfo"'))
    # Django's SQLite schema editor rebuilds tables and so drops their triggers; the next
    # migrate puts the guard back.
    _manage(env, "shell", "-c", textwrap.dedent("""
        from django.db import connection
        from plugins.models import PluginVersion
        with connection.schema_editor() as editor:
            old = PluginVersion._meta.get_field("review_comment")
            new = PluginVersion._meta.get_field("review_comment").clone()
            new.set_attributes_from_name("review_comment")
            new.default = "rebuilt"
            editor.alter_field(PluginVersion, old, new)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'")
            assert cursor.fetchone()[0] == 1, "expected the rebuild to drop the version guard"
    """))
    _manage(env, "migrate", "-v0")
    assert "guarded sqlite" in _manage(env, "shell", "-c", SQLITE_CHECK)
