"""Input and output shapes of the notifications API."""

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from ccs.api import BIGINT_MAX, StrictSerializerMixin

from .models import Event, Notification, Subscription


@extend_schema_serializer(examples=[
    OpenApiExample("my failed tasks by e-mail", request_only=True, value={
        "channel": "email", "address": "me@example.com", "events": ["task.failed"]}),
    OpenApiExample("a saved job's outcomes to chat", request_only=True, value={
        "channel": "webhook", "address": "https://hooks.slack.com/services/T0/B0/x",
        "events": ["task.finished", "task.failed", "schedule.failed"], "job": 1}),
])
class SubscriptionIn(StrictSerializerMixin, serializers.Serializer):
    """Where to tell of which events: yours, a saved job's (`job`) or a task's (`task`)."""

    channel = serializers.ChoiceField(choices=Subscription.Channel.choices)
    address = serializers.CharField(max_length=2000,
                                    help_text="an e-mail address or a webhook URL")
    events = serializers.ListField(child=serializers.ChoiceField(choices=Event.choices),
                                   allow_empty=False, max_length=len(Event.values))
    job = serializers.IntegerField(min_value=1, max_value=BIGINT_MAX, required=False,
                                   source="job_id", help_text="a saved job's id")
    task = serializers.IntegerField(min_value=1, max_value=BIGINT_MAX, required=False,
                                    source="task_id", help_text="a task's id")


class SubscriptionOut(serializers.ModelSerializer):
    """A subscription."""

    events = serializers.ListField(child=serializers.ChoiceField(choices=Event.choices))

    class Meta:
        model = Subscription
        fields = ["id", "channel", "address", "events", "job", "task", "created_at"]


class NotificationOut(serializers.ModelSerializer):
    """One notification of a subscription and how its delivery went."""

    class Meta:
        model = Notification
        fields = ["event", "key", "subject", "status", "attempts", "last_error", "created_at",
                  "sent_at"]
