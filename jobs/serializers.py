"""Input and output shapes of the saved jobs API."""

from drf_spectacular.utils import OpenApiExample, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from ccs.api import JsonBooleanField, QueryIn, StrictSerializerMixin
from tasks.serializers import TaskCreateIn

from .models import JobRun, Occurrence, SavedJob, Schedule
from .selectors import upcoming

JOB_NAME = "letters, digits, - and _"


EXAMPLE_LAUNCH = {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/search"]},
                  "run_as": "root", "control": {"batches": [1, "10%", "100%"]}}


@extend_schema_serializer(examples=[
    OpenApiExample("ping a node in canary batches", request_only=True, value={
        "name": "ping-search", "description": "is search up?", "launch": EXAMPLE_LAUNCH}),
])
class SavedJobIn(StrictSerializerMixin, serializers.Serializer):
    """A new saved job: a name, and a launch as `POST tasks/` takes it."""

    name = serializers.SlugField(max_length=100, help_text=JOB_NAME)
    description = serializers.CharField(max_length=500, default="", allow_blank=True)
    launch = TaskCreateIn(help_text="the body of POST tasks/; without version: the newest "
                          "approved at each run")


@extend_schema_serializer(examples=[
    OpenApiExample("rename", request_only=True, value={"name": "ping-search-all"}),
    OpenApiExample("another target", request_only=True, value={
        "launch": {**EXAMPLE_LAUNCH, "target": {"nodes": ["corp/search/frontend"]}}}),
])
class SavedJobEditIn(StrictSerializerMixin, serializers.Serializer):
    """A change to a saved job: any of its name, description and launch (replaced whole)."""

    name = serializers.SlugField(max_length=100, required=False, help_text=JOB_NAME)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    launch = TaskCreateIn(required=False)


class SavedJobFilterIn(QueryIn):
    """Filters of the saved job list."""

    name = serializers.SlugField(max_length=100, required=False)
    plugin = serializers.SlugField(max_length=100, required=False, help_text="plugin name")


class SavedJobOut(serializers.ModelSerializer):
    """A saved job."""

    owner = serializers.CharField(source="owner.username")
    launch = serializers.JSONField()

    class Meta:
        model = SavedJob
        fields = ["id", "name", "description", "owner", "launch", "created_at", "updated_at"]


class JobRunOut(serializers.ModelSerializer):
    """A task a saved job started."""

    status = serializers.CharField(source="task.status")
    creator = serializers.CharField(source="task.creator.username")
    total_hosts = serializers.IntegerField(source="task.total_hosts")
    task = serializers.IntegerField(source="task_id")

    class Meta:
        model = JobRun
        fields = ["task", "status", "version", "trigger", "creator", "total_hosts", "at"]


@extend_schema_serializer(examples=[
    OpenApiExample("weekdays at 03:00 in Paris", request_only=True,
                   value={"cron": "0 3 * * 1-5", "timezone": "Europe/Paris"}),
    OpenApiExample("once", request_only=True, value={"once_at": "2030-01-01T03:00:00Z"}),
])
class ScheduleIn(StrictSerializerMixin, serializers.Serializer):
    """When a saved job runs by itself: a cron expression in a time zone, or once."""

    cron = serializers.CharField(max_length=100, default="", allow_blank=True,
                                 help_text="five fields: minute hour day month weekday")
    timezone = serializers.CharField(source="timezone_name", max_length=64, default="UTC",
                                     help_text="an IANA time zone, e.g. Europe/Paris")
    once_at = serializers.DateTimeField(required=False, allow_null=True, default=None,
                                        help_text="a one-off run at this time")
    paused = JsonBooleanField(default=False)


@extend_schema_serializer(examples=[
    OpenApiExample("pause", request_only=True, value={"paused": True}),
    OpenApiExample("another time", request_only=True, value={"cron": "30 2 * * *"}),
])
class ScheduleEditIn(StrictSerializerMixin, serializers.Serializer):
    """A change to a schedule; you become its owner (its runs are your tasks)."""

    cron = serializers.CharField(max_length=100, required=False, allow_blank=True)
    timezone = serializers.CharField(source="timezone_name", max_length=64, required=False)
    once_at = serializers.DateTimeField(required=False, allow_null=True)
    paused = JsonBooleanField(required=False)


class ScheduleOut(serializers.ModelSerializer):
    """A schedule, with its next fire times."""

    job_name = serializers.CharField(source="job.name")
    owner = serializers.CharField(source="owner.username")
    upcoming = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = ["id", "job", "job_name", "owner", "cron", "timezone", "once_at", "paused",
                  "next_at", "upcoming", "created_at"]

    @extend_schema_field(serializers.ListField(child=serializers.DateTimeField()))
    def get_upcoming(self, schedule: Schedule) -> list[str]:
        """The next fire times (none while paused), in the schedule's time zone."""
        if schedule.paused or schedule.next_at is None:
            return []
        return [t.isoformat() for t in upcoming(schedule)]


class OccurrenceOut(serializers.ModelSerializer):
    """One occurrence of a schedule: the task it started, or why it did not run."""

    class Meta:
        model = Occurrence
        fields = ["at", "status", "task", "error", "fired_at"]
