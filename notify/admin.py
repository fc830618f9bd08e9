"""Notifications in the admin: subscriptions, and every notification with its delivery
(failed ones by the filter, with the last error)."""

from django.contrib import admin

from .models import Notification, Subscription


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["user", "channel", "address", "job", "task", "created_at"]
    list_filter = ["channel"]
    search_fields = ["address", "user__username"]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "event", "key", "subscription", "status", "attempts",
                    "last_error"]
    list_filter = ["status", "event"]
    readonly_fields = [f.name for f in Notification._meta.fields]

    def has_add_permission(self, request, obj=None) -> bool:
        return False
