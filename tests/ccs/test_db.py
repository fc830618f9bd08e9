"""ccs/db.py's bulk SQL against the real database: what goes in comes back out."""

import json
from datetime import UTC, datetime

import pytest
from django.db import connection

from ccs.db import bulk_update_rows, id_match, insert_rows

pytestmark = pytest.mark.django_db

NASTY = ["tab\there", "back\\slash", "new\nline", "cr\rhere", "\\N", "é ∑ 🙂", "", "'quote\""]


@pytest.fixture
def table():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE scratch (id bigint, name text, flag boolean, "
                       "at timestamp with time zone, n integer, data jsonb)")
    yield "scratch"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE scratch")


def _read(table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, name, n, data FROM {table} ORDER BY id")
        return [(i, name, n, json.loads(data)) for i, name, n, data in cursor.fetchall()]


def test_insert_rows_keeps_every_character_and_none(table):
    at = datetime(2026, 11, 29, 12, 0, 1, 250000, tzinfo=UTC)
    data = json.dumps({"k": "a\\b\n\t"})
    rows = [(i, name, i % 2 == 0, at, None if i == 3 else i, data)
            for i, name in enumerate(NASTY)]
    insert_rows(table, ("id", "name", "flag", "at", "n", "data"), rows)
    assert _read(table) == [(i, name, n, json.loads(data)) for i, name, _, _, n, _ in rows]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE flag AND at = %s",
                       [at if connection.vendor == "postgresql" else str(at)[:-6]])
        assert cursor.fetchone()[0] == 4


def test_bulk_update_rows_and_id_match(table):
    insert_rows(table, ("id", "name"), [(i, "x") for i in range(5)])
    count = bulk_update_rows(table, (("id", "bigint"), ("name", "text")),
                             [(i, NASTY[i]) for i in (1, 3)])
    assert count == 2
    match, param = id_match("id", [1, 3, 4])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT name FROM {table} WHERE {match} ORDER BY id", [param])
        assert [row[0] for row in cursor.fetchall()] == [NASTY[1], NASTY[3], "x"]
