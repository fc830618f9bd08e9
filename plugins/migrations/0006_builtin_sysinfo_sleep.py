"""Built-in plugins `sysinfo` and `sleep`, approved and signed like `ping`."""

from django.db import migrations


def install(apps, schema_editor):
    from plugins.services import builtin_plugins_install

    builtin_plugins_install(
        apps.get_model("plugins", "Plugin"),
        apps.get_model("plugins", "PluginVersion"),
        names=["sysinfo", "sleep"],
    )


class Migration(migrations.Migration):
    dependencies = [("plugins", "0005_reviewers_group")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
