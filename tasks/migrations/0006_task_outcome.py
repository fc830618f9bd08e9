"""Tasks end succeeded, failed or stopped: `finished` tasks get the outcome of their subtasks."""

from django.db import migrations, models
from django.db.models import Count, Q

FAILURES = ("failed", "timeout", "lost")


def finished_to_outcome(apps, schema_editor) -> None:
    Task = apps.get_model("tasks", "Task")
    finished = list(Task.objects.filter(status="finished").annotate(
        failures=Count("subtasks", filter=Q(subtasks__status__in=FAILURES)),
        stopped=Count("subtasks", filter=Q(subtasks__status="stopped")),
    ).values_list("pk", "failures", "stopped"))
    failed = [pk for pk, failures, _ in finished if failures]
    stopped = [pk for pk, failures, stops in finished if stops and not failures]
    Task.objects.filter(pk__in=failed).update(status="failed")
    Task.objects.filter(pk__in=stopped).update(status="stopped")
    Task.objects.filter(status="finished").update(status="succeeded")


def outcome_to_finished(apps, schema_editor) -> None:
    Task = apps.get_model("tasks", "Task")
    Task.objects.filter(status__in=("succeeded", "failed")).update(status="finished")
    Task.objects.filter(status="stopping").update(status="stopped")


class Migration(migrations.Migration):

    dependencies = [
        ("tasks", "0005_hot_tables"),
    ]

    operations = [
        migrations.AlterField(
            model_name="task",
            name="status",
            field=models.CharField(choices=[("pending", "Pending"), ("running", "Running"), ("paused", "Paused"), ("stopping", "Stopping"), ("succeeded", "Succeeded"), ("failed", "Failed"), ("stopped", "Stopped")], default="pending", max_length=16),
        ),
        migrations.RunPython(finished_to_outcome, outcome_to_finished),
    ]
