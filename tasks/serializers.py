"""Input and output shapes of the tasks API."""

from drf_spectacular.utils import OpenApiExample, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from ccs.api import BIGINT_MAX, INT_MAX, FilterIn, QueryIn, StrictSerializerMixin, pattern_field
from permissions.serializers import TREE_PATH
from permissions.services.tree import PATH
from plugins.checks import ACCOUNT, MAX_TIMEOUT, NAME
from plugins.serializers import ACCOUNT_NAME, PLUGIN_NAME

from .control import MAX_COUNT, PERCENT
from .events import PAGE
from .models import CallbackAttempt, SubTask, Task
from .selectors import GROUP_KEY
from .states import FINAL, FINAL_CHOICES, OUTCOME_FAILED, SubTaskStatus, TaskStatus

COUNT_OR_PERCENT = {
    "oneOf": [
        {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
        {"type": "string", "pattern": f"^{PERCENT.pattern}$"},
    ],
    "example": "10%",
}


class TargetIn(StrictSerializerMixin, serializers.Serializer):
    """Hosts to run on: every host under these tree paths, and these hosts by name."""

    nodes = serializers.ListField(
        child=pattern_field(PATH, TREE_PATH, max_length=1000), default=list,
        help_text="tree paths")
    hosts = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=253), default=list,
        help_text="host names")


@extend_schema_field(COUNT_OR_PERCENT)
class CountOrPercent(serializers.Field):
    """A positive count or a percentage string like "10%" (checked by tasks.control)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str):
            raise serializers.ValidationError("a count or a percentage like '10%'")
        return data

    def to_representation(self, value):
        return value


class ControlIn(StrictSerializerMixin, serializers.Serializer):
    """How the task runs: per-host timeout, priority, concurrency, batches with pause points,
    auto-resume and the failure threshold that pauses it."""

    timeout = serializers.IntegerField(min_value=1, max_value=MAX_TIMEOUT, required=False,
                                       help_text="seconds per host; at most the version's")
    priority = serializers.ChoiceField(choices=Task.Priority.choices, default="normal")
    concurrency = serializers.IntegerField(min_value=1, max_value=MAX_COUNT, required=False,
                                           allow_null=True,
                                           help_text="at most this many hosts at once")
    batches = serializers.ListField(
        child=CountOrPercent(), max_length=20, default=list,
        help_text="sizes of successive batches; the task pauses after each but the last",
    )
    failure_threshold = CountOrPercent(
        required=False, allow_null=True,
        help_text="failed or timed-out hosts (count or percentage) that pause the task",
    )
    auto_resume = serializers.IntegerField(
        min_value=1, max_value=MAX_TIMEOUT, required=False, allow_null=True,
        help_text="seconds after a pause point to go on by itself, if nothing failed",
    )


@extend_schema_serializer(examples=[
    OpenApiExample("ping a node", request_only=True, value={
        "plugin": "ping", "params": {}, "target": {"nodes": ["corp/search/frontend"]},
        "run_as": "root",
    }),
    OpenApiExample("canary batches", request_only=True, value={
        "plugin": "sleep", "version": 1, "params": {"seconds": 5},
        "target": {"nodes": ["corp/search"], "hosts": ["web-001"]}, "run_as": "root",
        "control": {"batches": [1, "10%", "100%"], "failure_threshold": 2, "timeout": 60,
                    "concurrency": 100, "priority": "high", "auto_resume": 300},
        "callback_url": "https://hooks.example.com/ccs",
    }),
])
class TaskCreateIn(StrictSerializerMixin, serializers.Serializer):
    """A new task: an approved plugin version, its params, the target hosts and the account."""

    plugin = pattern_field(NAME, PLUGIN_NAME, help_text="plugin name")
    version = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False,
                                       allow_null=True,
                                       help_text="version number; default the newest approved")
    params = serializers.DictField(default=dict, help_text="checked against the version's schema")
    target = TargetIn()
    run_as = pattern_field(ACCOUNT, ACCOUNT_NAME, help_text="account the plugin runs as")
    control = ControlIn(default=dict)
    type = serializers.SlugField(max_length=32, default="adhoc")
    callback_url = serializers.CharField(max_length=2000, required=False, default="",
                                         allow_blank=True,
                                         help_text="events are POSTed here, signed")

    def validate_target(self, target: dict) -> dict:
        if not target["nodes"] and not target["hosts"]:
            raise serializers.ValidationError("name at least one node or host")
        return target


@extend_schema_serializer(examples=[
    OpenApiExample("failed, timed out and lost hosts", request_only=True, value={}),
    OpenApiExample("only the timed-out hosts", request_only=True,
                   value={"statuses": ["timeout"]}),
])
class RerunIn(StrictSerializerMixin, serializers.Serializer):
    """Which hosts to run again: those whose subtasks ended in these states."""

    statuses = serializers.ListField(
        child=serializers.ChoiceField(choices=FINAL_CHOICES), allow_empty=False,
        default=sorted(OUTCOME_FAILED), max_length=len(FINAL),
    )


class LaunchQueryIn(FilterIn):
    """The query of a launch: `plan=1` answers what it would do and creates nothing."""

    plan = serializers.BooleanField(default=False,
                                    help_text="1: answer the plan, create nothing")


class HostSampleOut(serializers.Serializer):
    """How many hosts, and up to 20 of their names."""

    count = serializers.IntegerField()
    hosts = serializers.ListField(child=serializers.CharField())


class QuotaAnswerOut(serializers.Serializer):
    """Whether the quota allows the launch; if not, the limit it meets."""

    allowed = serializers.BooleanField()
    detail = serializers.CharField(allow_blank=True)


class PlanOut(serializers.Serializer):
    """What a launch would do, created nothing: hosts per datacenter, those not operable or
    unreachable by the last probe, the batches' sizes, the version and the quota's answer."""

    allowed = serializers.BooleanField(help_text="whether the launch would be accepted now")
    plugin = serializers.CharField()
    version = serializers.IntegerField()
    run_as = serializers.CharField()
    timeout = serializers.IntegerField()
    total_hosts = serializers.IntegerField()
    datacenters = serializers.DictField(child=serializers.IntegerField(),
                                        help_text="hosts per datacenter")
    batches = serializers.ListField(child=serializers.IntegerField(),
                                    help_text="hosts per batch, pausing between them")
    not_operable = HostSampleOut()
    unreachable = HostSampleOut(help_text="offline at the last probe")
    quota = QuotaAnswerOut()


class TaskFilterIn(QueryIn):
    """Filters of the task list."""

    status = serializers.ChoiceField(choices=TaskStatus.choices, required=False)
    plugin = pattern_field(NAME, PLUGIN_NAME, required=False, help_text="plugin name")
    creator = serializers.CharField(max_length=150, required=False, help_text="user name")
    type = serializers.SlugField(source="task_type", max_length=32, required=False)


@extend_schema_field({"type": "string", "pattern": f"^{GROUP_KEY.pattern}$",
                      "example": "failed:1:0f1e2d3c4b5a6978"})
class GroupKeyField(serializers.RegexField):
    """A summary group's key, `status:exit code:output hash` (the exit code may be empty)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(f"^{GROUP_KEY.pattern}$", max_length=100,
                         error_messages={"invalid": "not a group key (status:exit code:hash)"},
                         **kwargs)


class SubTaskFilterIn(QueryIn):
    """Filters of a task's subtasks."""

    status = serializers.ChoiceField(choices=SubTaskStatus.choices, required=False)
    datacenter = serializers.SlugField(max_length=64, required=False)
    group = GroupKeyField(required=False, help_text="a summary group's key")
    host = serializers.CharField(max_length=253, required=False,
                                 help_text="a part of the host name")


class SummaryFilterIn(FilterIn):
    """Filter of a task's summary."""

    datacenter = serializers.SlugField(max_length=64, required=False)


class EventsIn(FilterIn):
    """Where a page of events starts, and how long it is."""

    after = serializers.IntegerField(min_value=0, max_value=BIGINT_MAX, default=0,
                                     help_text="the last event number already seen")
    limit = serializers.IntegerField(min_value=1, max_value=PAGE, default=PAGE)


class ControlOut(serializers.Serializer):
    timeout = serializers.IntegerField()
    priority = serializers.ChoiceField(choices=Task.Priority.choices)
    concurrency = serializers.IntegerField(allow_null=True)
    batches = serializers.ListField(child=CountOrPercent())
    failure_threshold = CountOrPercent(allow_null=True)
    auto_resume = serializers.IntegerField(allow_null=True)


class TaskOut(serializers.ModelSerializer):
    """A task."""

    plugin = serializers.CharField(source="plugin_version.plugin.name")
    version = serializers.IntegerField(source="plugin_version.number")
    creator = serializers.CharField(source="creator.username")
    control = serializers.SerializerMethodField()
    type = serializers.CharField(source="task_type")

    class Meta:
        model = Task
        fields = [
            "id", "plugin", "version", "params", "run_as", "status", "paused_reason", "type",
            "creator", "control", "batch", "total_hosts", "created_at", "started_at",
            "finished_at",
        ]

    @extend_schema_field(ControlOut)
    def get_control(self, task: Task) -> dict:
        threshold = task.failure_threshold
        return {
            "timeout": task.timeout, "priority": task.priority, "concurrency": task.concurrency,
            "batches": task.batches,
            "failure_threshold": int(threshold) if threshold.isdigit() else threshold or None,
            "auto_resume": task.auto_resume,
        }


class TaskDetailOut(TaskOut):
    """A task with its subtasks counted per state."""

    counts = serializers.SerializerMethodField()

    class Meta(TaskOut.Meta):
        fields = [*TaskOut.Meta.fields, "counts"]

    def get_counts(self, task: Task) -> dict[str, int]:
        return task.counts()


class TaskCreatedOut(TaskDetailOut):
    """The created task, with the callback secret: shown this once, never again."""

    callback_secret = serializers.CharField()

    class Meta(TaskDetailOut.Meta):
        fields = [*TaskDetailOut.Meta.fields, "callback_url", "callback_secret"]


class CallbackAttemptOut(serializers.ModelSerializer):
    """One POST of a batch of events to the task's callback URL."""

    class Meta:
        model = CallbackAttempt
        fields = ["delivery", "first_seq", "last_seq", "status_code", "error", "duration_ms", "at"]


class SubTaskOut(serializers.ModelSerializer):
    """One host's part of a task, with its result."""

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
    """Hosts with the same outcome: status, exit code and output."""

    key = serializers.CharField(help_text="selects the group's subtasks: subtasks/?group=<key>")
    status = serializers.ChoiceField(choices=SubTaskStatus.choices)
    exit_code = serializers.IntegerField(allow_null=True)
    count = serializers.IntegerField()
    hosts = serializers.ListField(child=serializers.CharField(), help_text="up to 10 of them")
    stdout = serializers.CharField(allow_blank=True)
    stderr = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(allow_blank=True)


class SummaryOut(serializers.Serializer):
    """A task's outcomes grouped, largest group first."""

    task = serializers.IntegerField()
    total = serializers.IntegerField()
    groups = SummaryGroupOut(many=True)


class EventOut(serializers.Serializer):
    """One transition; `from` is added in get_fields (a Python keyword)."""

    seq = serializers.IntegerField()
    task = serializers.IntegerField()
    subtask = serializers.IntegerField()
    host = serializers.CharField()
    to = serializers.ChoiceField(choices=SubTaskStatus.choices)
    at = serializers.DateTimeField()
    data = serializers.DictField()

    def get_fields(self) -> dict:
        return {**super().get_fields(), "from": serializers.ChoiceField(SubTaskStatus.choices)}


class EventPageOut(serializers.Serializer):
    """A page of events; ask for the next with `after=next_after` while `more` is true."""

    results = EventOut(many=True)
    next_after = serializers.IntegerField()
    more = serializers.BooleanField()
