from django.db import migrations


def install(apps, schema_editor):
    from plugins.services import builtin_plugins_install

    builtin_plugins_install(
        apps.get_model("plugins", "Plugin"), apps.get_model("plugins", "PluginVersion"), names=["ping"]
    )


class Migration(migrations.Migration):
    dependencies = [("plugins", "0001_initial")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
