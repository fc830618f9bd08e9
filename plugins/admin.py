from django.contrib import admin

from .models import Plugin, PluginVersion


@admin.register(Plugin)
class PluginAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "created_at"]
    search_fields = ["name"]


@admin.register(PluginVersion)
class PluginVersionAdmin(admin.ModelAdmin):
    list_display = ["plugin", "number", "interpreter", "status", "author", "reviewer"]
    list_filter = ["status", "interpreter"]
    readonly_fields = ["sha256", "signature", "reviewer", "reviewed_at", "created_at"]

    def has_change_permission(self, request, obj=None) -> bool:
        # Only drafts change; review and signing go through the plugin services.
        if obj is not None and obj.status != PluginVersion.Status.DRAFT:
            return False
        return super().has_change_permission(request, obj)
