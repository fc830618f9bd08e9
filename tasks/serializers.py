"""Input and output shapes of the tasks API."""

from rest_framework import serializers

from ccs.api import StrictSerializerMixin

from .models import CallbackAttempt, SubTask, Task
from .states import FINAL, OUTCOME_FAILED


class TargetIn(StrictSerializerMixin, serializers.Serializer):
    nodes = serializers.ListField(child=serializers.CharField(max_length=1000), default=list)
    hosts = serializers.ListField(child=serializers.CharField(max_length=253), default=list)


class CountOrPercent(serializers.Field):
    """A positive count or a percentage string like "10%" (checked by tasks.control)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str):
            raise serializers.ValidationError("a count or a percentage like '10%'")
        return data

    def to_representation(self, value):
        return value


class ControlIn(StrictSerializerMixin, serializers.Serializer):
    timeout = serializers.IntegerField(min_value=1, required=False)
    priority = serializers.ChoiceField(choices=Task.Priority.choices, default="normal")
    concurrency = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    batches = serializers.ListField(child=CountOrPercent(), max_length=20, default=list)
    failure_threshold = CountOrPercent(required=False, allow_null=True)
    auto_resume = serializers.IntegerField(min_value=1, required=False, allow_null=True)


class TaskCreateIn(StrictSerializerMixin, serializers.Serializer):
    plugin = serializers.CharField(max_length=100)
    version = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    params = serializers.DictField(default=dict)
    target = TargetIn()
    run_as = serializers.CharField(max_length=64)
    control = ControlIn(default=dict)
    type = serializers.SlugField(max_length=32, default="adhoc")
    callback_url = serializers.CharField(max_length=2000, required=False, default="")

    def validate_target(self, target: dict) -> dict:
        if not target["nodes"] and not target["hosts"]:
            raise serializers.ValidationError("name at least one node or host")
        return target


class RerunIn(StrictSerializerMixin, serializers.Serializer):
    """Which hosts to run again: those whose subtasks ended in these states."""

    statuses = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(FINAL)), allow_empty=False,
        default=sorted(OUTCOME_FAILED), max_length=len(FINAL),
    )


class TaskOut(serializers.ModelSerializer):
    plugin = serializers.CharField(source="plugin_version.plugin.name")
    version = serializers.IntegerField(source="plugin_version.number")
    creator = serializers.CharField(source="creator.username")
    control = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id", "plugin", "version", "params", "run_as", "status", "paused_reason", "type",
            "creator", "control", "batch", "total_hosts", "created_at", "started_at",
            "finished_at",
        ]

    type = serializers.CharField(source="task_type")

    def get_control(self, task: Task) -> dict:
        return {
            "timeout": task.timeout, "priority": task.priority, "concurrency": task.concurrency,
            "batches": task.batches, "failure_threshold": task.failure_threshold or None,
            "auto_resume": task.auto_resume,
        }


class TaskDetailOut(TaskOut):
    counts = serializers.SerializerMethodField()

    class Meta(TaskOut.Meta):
        fields = [*TaskOut.Meta.fields, "counts"]

    def get_counts(self, task: Task) -> dict[str, int]:
        return self.context["counts"]


class TaskCreatedOut(TaskDetailOut):
    """The created task, with the callback secret: shown this once, never again."""

    callback_secret = serializers.CharField()

    class Meta(TaskDetailOut.Meta):
        fields = [*TaskDetailOut.Meta.fields, "callback_url", "callback_secret"]


class CallbackAttemptOut(serializers.ModelSerializer):
    class Meta:
        model = CallbackAttempt
        fields = ["delivery", "first_seq", "last_seq", "status_code", "error", "duration_ms", "at"]


class SubTaskOut(serializers.ModelSerializer):
    host = serializers.CharField(source="host.hostname")
    datacenter = serializers.CharField(source="datacenter.name")

    class Meta:
        model = SubTask
        fields = [
            "id", "task", "host", "datacenter", "status", "exit_code", "stdout", "stderr",
            "stdout_truncated", "stderr_truncated", "reason", "worker", "queued_at",
            "started_at", "finished_at",
        ]


class SummaryGroupOut(serializers.Serializer):
    status = serializers.CharField()
    exit_code = serializers.IntegerField(allow_null=True)
    count = serializers.IntegerField()
    hosts = serializers.ListField(child=serializers.CharField())
    stdout = serializers.CharField()
    stderr = serializers.CharField()
    reason = serializers.CharField()


class EventOut(serializers.Serializer):
    """One transition; `from` is added in get_fields (a Python keyword)."""

    seq = serializers.IntegerField()
    task = serializers.IntegerField()
    subtask = serializers.IntegerField()
    host = serializers.CharField()
    to = serializers.CharField()
    at = serializers.DateTimeField()
    data = serializers.DictField()

    def get_fields(self) -> dict:
        return {**super().get_fields(), "from": serializers.CharField()}


class EventPageOut(serializers.Serializer):
    results = EventOut(many=True)
    next_after = serializers.IntegerField()
    more = serializers.BooleanField()
