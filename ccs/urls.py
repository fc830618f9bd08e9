"""URL map: the admin, the v1 API, its schema and docs."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from ccs.logins import TokenLogin
from permissions.apis import DatacenterViewSet, HostViewSet, NodeViewSet
from plugins.apis import PluginVersionViewSet, PluginViewSet
from tasks.apis import SubTaskViewSet, TaskViewSet

router = DefaultRouter(trailing_slash=True)
router.register("tasks", TaskViewSet, basename="task")
router.register("subtasks", SubTaskViewSet, basename="subtask")
router.register("plugins", PluginViewSet, basename="plugin")
router.register("plugin-versions", PluginVersionViewSet, basename="plugin-version")
router.register("datacenters", DatacenterViewSet, basename="datacenter")
router.register("nodes", NodeViewSet, basename="node")
router.register("hosts", HostViewSet, basename="host")

api_v1 = [
    path("auth/token", TokenLogin.as_view(), name="auth-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include(router.urls)),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
]
