"""URL map: the admin, the v1 API, its schema and docs. API paths work with or without
their trailing slash; the schema lists them with it."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from ccs.logins import TokenLogin
from permissions.apis import DatacenterViewSet, HostViewSet, NodeViewSet
from plugins.apis import PluginVersionViewSet, PluginViewSet
from tasks.apis import SubTaskViewSet, TaskViewSet

router = DefaultRouter()
router.trailing_slash = "/?"  # a regex: POST tasks and POST tasks/ are the same request
router.register("tasks", TaskViewSet, basename="task")
router.register("subtasks", SubTaskViewSet, basename="subtask")
router.register("plugins", PluginViewSet, basename="plugin")
router.register("plugin-versions", PluginVersionViewSet, basename="plugin-version")
router.register("datacenters", DatacenterViewSet, basename="datacenter")
router.register("nodes", NodeViewSet, basename="node")
router.register("hosts", HostViewSet, basename="host")

api_v1 = [
    re_path(r"^auth/token/?$", TokenLogin.as_view(), name="auth-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include(router.urls)),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
]

handler404 = "ccs.api.not_found"
handler500 = "ccs.api.server_error"
