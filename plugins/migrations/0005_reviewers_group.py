"""The `Reviewers` group, holding the permission to approve or reject plugin versions."""

from django.db import migrations


def seed(apps, schema_editor):
    from plugins.services import reviewers_group_ensure

    reviewers_group_ensure(
        apps.get_model("auth", "Group"),
        apps.get_model("auth", "Permission"),
        apps.get_model("contenttypes", "ContentType"),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("plugins", "0004_version_guard"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
