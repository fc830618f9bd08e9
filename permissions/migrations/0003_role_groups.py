from django.db import migrations

ROLES = ["RD", "QA", "OP"]


def seed(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLES:
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    """The role groups: rights on nodes are granted to them (RD, QA: view; OP: operate)."""

    dependencies = [("permissions", "0002_rights_audit"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
