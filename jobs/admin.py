"""Saved jobs in the admin: read their runs and the audit of every change."""

from django.contrib import admin

from .models import JobAudit, JobRun, Occurrence, SavedJob, Schedule


class ReadOnly(admin.ModelAdmin):
    """Changes go through the services (audited); the admin shows what happened."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SavedJob)
class SavedJobAdmin(ReadOnly):
    list_display = ["name", "owner", "updated_at"]
    search_fields = ["name", "description"]


@admin.register(JobRun)
class JobRunAdmin(ReadOnly):
    list_display = ["job", "task", "version", "trigger", "at"]


@admin.register(JobAudit)
class JobAuditAdmin(ReadOnly):
    list_display = ["at", "job_name", "action", "actor", "task"]
    list_filter = ["action"]


@admin.register(Schedule)
class ScheduleAdmin(ReadOnly):
    list_display = ["job", "cron", "timezone", "once_at", "paused", "next_at", "owner"]
    list_filter = ["paused"]


@admin.register(Occurrence)
class OccurrenceAdmin(ReadOnly):
    """Failed occurrences first in mind: the filter shows which schedules could not run."""

    list_display = ["schedule", "at", "status", "task", "error"]
    list_filter = ["status"]
