"""URL map: the operator console at the root, the admin, the v1 API, its schema and docs.
API paths work with or without their trailing slash; the schema lists them with it."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from ccs.logins import TokenLogin
from ccs.metrics import metrics
from permissions.apis import DatacenterViewSet, HostViewSet, NodeViewSet
from plugins.apis import PluginVersionViewSet, PluginViewSet
from tasks.apis import SubTaskViewSet, TaskViewSet
from tasks.views import history, launch, watch

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

STEER = r"(?P<op>pause|resume|stop)"
console = [
    path("", history.home, name="home"),
    path("login/", auth_views.LoginView.as_view(
        template_name="console/login.html", redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("launch/", launch.launch_index, name="launch-index"),
    path("targets/", launch.launch_target, name="launch-target"),
    path("launch/<slug:plugin>/", launch.launch, name="launch"),
    path("tasks/", history.history, name="history"),
    path("tasks/<int:pk>/", watch.task_page, name="task"),
    path("tasks/<int:pk>/head/", watch.task_head, name="task-head"),
    path("tasks/<int:pk>/groups/", watch.task_groups, name="task-groups"),
    path("tasks/<int:pk>/hosts/", watch.task_hosts, name="task-hosts"),
    path("tasks/<int:pk>/rerun/", watch.task_rerun, name="task-rerun"),
    re_path(rf"^tasks/(?P<pk>\d+)/{STEER}/$", watch.task_steer, name="task-steer"),
    re_path(rf"^subtasks/(?P<pk>\d+)/{STEER}/$", watch.subtask_steer, name="subtask-steer"),
    path("hosts/<str:hostname>/", history.host_page, name="host"),
]

urlpatterns = [
    path("", include((console, "console"))),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    re_path(r"^metrics/?$", metrics, name="metrics"),
]

handler404 = "ccs.api.not_found"
handler500 = "ccs.api.server_error"
