"""The database guard: approved plugin versions and plugin names never change (plugins/guard.py)."""

from django.db import migrations


def install(apps, schema_editor):
    from plugins.guard import guard_install

    guard_install(schema_editor.connection)


def remove(apps, schema_editor):
    from plugins.guard import guard_remove

    guard_remove(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("plugins", "0003_review")]

    operations = [migrations.RunPython(install, remove)]
