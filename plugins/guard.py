"""The database guard: approved plugin versions never change, even under a raw UPDATE.

A BEFORE UPDATE trigger refuses any change to an approved or retired version except
approved → retired (with its `retired_at`), and any rename of a plugin (the name is signed).
PostgreSQL compares whole rows, so columns added later are covered at once; SQLite lists the
columns, and Django's SQLite schema editor drops triggers when it rebuilds a table, so the
guard is re-installed after every `migrate` (see apps.py) as well as by its migration.
On SQLite a migration that drops or renames a column of the version table must call
`guard_remove` first (SQLite refuses to drop a column a trigger names).
"""

from django.db.backends.base.base import BaseDatabaseWrapper

VERSIONS = "plugins_pluginversion"
PLUGINS = "plugins_plugin"
VERSION_TRIGGER = "plugins_version_frozen"
PLUGIN_TRIGGER = "plugins_plugin_name_frozen"
# Columns an approved version may still change, and only when it is retired.
MUTABLE = ("status", "retired_at")
FROZEN = "('approved', 'retired')"
MESSAGE = "approved plugin versions never change"

_PG_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION {VERSION_TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (NEW.status = OLD.status OR (OLD.status = 'approved' AND NEW.status = 'retired'))
       OR (OLD.status = 'retired' AND NEW.retired_at IS DISTINCT FROM OLD.retired_at)
       OR (to_jsonb(NEW) - 'status' - 'retired_at')
          IS DISTINCT FROM (to_jsonb(OLD) - 'status' - 'retired_at')
    THEN
        RAISE EXCEPTION '{MESSAGE}: % % is %', TG_TABLE_NAME, OLD.id, OLD.status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION {PLUGIN_TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'plugin names never change (they are signed): %', OLD.name
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
"""
_PG_TRIGGERS = {
    VERSION_TRIGGER: f"""CREATE TRIGGER {VERSION_TRIGGER} BEFORE UPDATE ON {VERSIONS}
        FOR EACH ROW WHEN (OLD.status IN {FROZEN}) EXECUTE FUNCTION {VERSION_TRIGGER}()""",
    PLUGIN_TRIGGER: f"""CREATE TRIGGER {PLUGIN_TRIGGER} BEFORE UPDATE ON {PLUGINS}
        FOR EACH ROW WHEN (NEW.name IS DISTINCT FROM OLD.name)
        EXECUTE FUNCTION {PLUGIN_TRIGGER}()""",
}


def _sqlite_triggers(columns: list[str]) -> dict[str, str]:
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in columns if c not in MUTABLE)
    return {
        VERSION_TRIGGER: f"""CREATE TRIGGER {VERSION_TRIGGER} BEFORE UPDATE ON {VERSIONS}
            FOR EACH ROW WHEN OLD.status IN {FROZEN} AND (
                NOT (NEW.status = OLD.status
                     OR (OLD.status = 'approved' AND NEW.status = 'retired'))
                OR (OLD.status = 'retired' AND NEW.retired_at IS NOT OLD.retired_at)
                OR {changed})
            BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
        PLUGIN_TRIGGER: f"""CREATE TRIGGER {PLUGIN_TRIGGER} BEFORE UPDATE ON {PLUGINS}
            FOR EACH ROW WHEN NEW.name IS NOT OLD.name
            BEGIN SELECT RAISE(ABORT, 'plugin names never change (they are signed)'); END""",
    }


def guard_install(connection: BaseDatabaseWrapper) -> None:
    """Create the triggers, or bring them up to date; idempotent and cheap when current."""
    tables = connection.introspection.table_names()
    if VERSIONS not in tables or PLUGINS not in tables:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_PG_FUNCTIONS)
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE tgname IN (%s, %s) AND NOT tgisinternal",
                [VERSION_TRIGGER, PLUGIN_TRIGGER],
            )
            present = {row[0] for row in cursor.fetchall()}
            for name, sql in _PG_TRIGGERS.items():
                if name not in present:
                    cursor.execute(sql)
        elif connection.vendor == "sqlite":
            columns = [c.name for c in connection.introspection.get_table_description(
                cursor, VERSIONS)]
            _sqlite_replace(cursor, _sqlite_triggers(columns))
        else:
            raise NotImplementedError(f"no plugin version guard for {connection.vendor}")


def _sqlite_replace(cursor, triggers: dict[str, str]) -> None:
    cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
    current = dict(cursor.fetchall())
    for name, sql in triggers.items():
        if current.get(name) != sql:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
            cursor.execute(sql)


def guard_remove(connection: BaseDatabaseWrapper) -> None:
    """Drop the triggers (reverse migration)."""
    with connection.cursor() as cursor:
        for name, table in ((VERSION_TRIGGER, VERSIONS), (PLUGIN_TRIGGER, PLUGINS)):
            on_table = f" ON {table}" if connection.vendor == "postgresql" else ""
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}{on_table}")
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP FUNCTION IF EXISTS {name}()")
