from typing import Any

from django.apps import AppConfig
from django.db import connections
from django.db.migrations.recorder import MigrationRecorder
from django.db.models.signals import post_migrate

GUARD_MIGRATION = ("plugins", "0004_version_guard")


def _guard_reinstall(using: str, **kwargs: Any) -> None:
    from .guard import guard_install

    connection = connections[using]
    if GUARD_MIGRATION in MigrationRecorder(connection).applied_migrations():
        guard_install(connection)


class PluginsConfig(AppConfig):
    """Plugins, versions, review and signing."""

    name = "plugins"

    def ready(self) -> None:
        # The SQLite schema editor drops triggers when it rebuilds a table: put the guard back.
        post_migrate.connect(_guard_reinstall, sender=self, dispatch_uid="plugins_guard")
