"""Input and output shapes of the saved jobs API."""

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from ccs.api import QueryIn, StrictSerializerMixin
from tasks.serializers import TaskCreateIn

from .models import JobRun, SavedJob

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
