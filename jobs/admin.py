"""Saved jobs in the admin: read their runs and the audit of every change."""

from django.contrib import admin

from .models import JobAudit, JobRun, SavedJob


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
