from django.contrib import admin

from .models import CallbackAttempt, CallbackCursor, Quota, SubTask, Task, TaskEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Tasks and their records change only through the engine, never by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = ["id", "plugin_version", "creator", "status", "priority", "total_hosts",
                    "created_at", "finished_at"]
    list_filter = ["status", "priority"]


@admin.register(SubTask)
class SubTaskAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "host", "datacenter", "status", "exit_code", "worker"]
    list_filter = ["status", "datacenter"]
    list_select_related = ["host", "datacenter"]
    raw_id_fields = ["task", "host"]


@admin.register(TaskEvent)
class TaskEventAdmin(ReadOnlyAdmin):
    list_display = ["task", "seq", "hostname", "from_status", "to_status", "at"]
    list_filter = ["to_status"]


@admin.register(CallbackAttempt)
class CallbackAttemptAdmin(ReadOnlyAdmin):
    list_display = ["task", "at", "delivery", "first_seq", "last_seq", "status_code", "error",
                    "duration_ms"]
    list_filter = ["status_code"]


@admin.register(CallbackCursor)
class CallbackCursorAdmin(ReadOnlyAdmin):
    list_display = ["task", "delivered_seq", "attempts", "failing_since", "next_attempt_at",
                    "gave_up"]
    list_filter = ["gave_up"]


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    """Per-user limits over the defaults in settings, and blocks (with the reason shown)."""

    list_display = ["user", "tasks_per_minute", "hosts_per_task", "running_tasks", "blocked",
                    "blocked_reason"]
    list_filter = ["blocked"]
    raw_id_fields = ["user"]
