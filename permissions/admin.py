from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from .models import Datacenter, Host, Node


@admin.register(Datacenter)
class DatacenterAdmin(admin.ModelAdmin):
    list_display = ["name", "description"]
    search_fields = ["name"]


@admin.register(Node)
class NodeAdmin(GuardedModelAdmin):
    list_display = ["path", "name", "parent"]
    search_fields = ["path"]
    raw_id_fields = ["parent"]


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["hostname", "address", "port", "datacenter", "channel", "status", "last_seen"]
    list_filter = ["datacenter", "channel", "status"]
    search_fields = ["hostname", "address"]
    filter_horizontal = ["nodes"]
