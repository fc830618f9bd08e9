"""Launching a task: pick an approved plugin, fill the form generated from its parameter
schema, pick targets on the service tree (seeing the exact number of hosts they expand to)."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ccs.errors import InvalidInput, NotFound, ServiceError
from jobs.models import SavedJob
from jobs.selectors import saved_job_visible
from jobs.services import saved_job_create, saved_job_edit
from permissions.rights import OPERATE
from permissions.selectors import nodes_with_host_counts
from plugins.models import PluginVersion
from plugins.selectors import plugin_version_runnable, plugins_runnable, versions_approved

from .. import services
from ..forms import LaunchForm, TargetForm, host_names
from ..services.create import targets_checked
from ..services.plan import Plan, task_plan


@login_required
def launch_index(request: HttpRequest) -> HttpResponse:
    return render(request, "console/launch_index.html", {"plugins": plugins_runnable()})


def _version(plugin: str, number: str | None) -> PluginVersion:
    """The approved version asked for (or the newest); 404 for a plugin with none."""
    if number and not number.isdigit():
        raise InvalidInput.field("version", f"not a version number: {number!r}")
    try:
        return plugin_version_runnable(plugin=plugin, version=int(number) if number else None)
    except InvalidInput as exc:
        if "plugin" in exc.errors:
            raise Http404(exc.detail) from None
        raise


def _tree(request: HttpRequest) -> list[dict]:
    """The nodes the user may run plugins on, indented below the topmost, with host counts."""
    nodes = list(nodes_with_host_counts(request.user, OPERATE))
    top = min((n.path.count("/") for n in nodes), default=0)
    return [{"node": n, "depth": n.path.count("/") - top} for n in nodes]


def _job(request: HttpRequest) -> SavedJob | None:
    """The saved job being edited on this form (`?job=<id>`), if any; 404 if not visible."""
    pk = request.GET.get("job")
    if not pk:
        return None
    if not pk.isdigit():
        raise Http404(f"no saved job {pk}")
    try:
        return saved_job_visible(request.user, int(pk))
    except NotFound as exc:
        raise Http404(exc.detail) from None


def _submitted(request: HttpRequest, form: LaunchForm,
               job: SavedJob | None) -> HttpResponse | Plan:
    """Do what the pressed button asks: plan, save the job, or launch."""
    data = request.POST
    if data.get("plan"):
        return task_plan(actor=request.user, **form.arguments())
    if data.get("save") and job:
        job = saved_job_edit(actor=request.user, job_id=job.pk, **form.job_arguments())
        return redirect("console:job", job.pk)
    if data.get("save"):
        return redirect("console:job", saved_job_create(actor=request.user,
                                                        **form.job_arguments()).pk)
    return redirect("console:task", services.task_create(actor=request.user,
                                                         **form.arguments()).pk)


@login_required
def launch(request: HttpRequest, plugin: str) -> HttpResponse:
    """The launch form of a plugin; a valid one creates the task and opens its page, or with
    the Plan button shows what the launch would do, creating nothing, or saves it as a job
    (`?job=<id>`: changes that job)."""
    data = request.POST if request.method == "POST" else None
    job = _job(request)
    try:
        version = _version(plugin, (data or request.GET).get("version"))
    except InvalidInput as exc:
        return render(request, "console/refusal.html",
                      {"error": exc.detail, "back": request.path}, status=exc.status)
    initial = LaunchForm.initial_of(job.launch, job.name, job.description) if job else None
    form = LaunchForm(version, data, initial=initial)
    status, plan = 200, None
    if data is not None and form.is_valid():
        try:
            answer = _submitted(request, form, job)
        except ServiceError as exc:
            form.add_service_error(exc)
            status = exc.status
        else:
            if isinstance(answer, HttpResponse):
                return answer
            plan = answer
    elif data is not None:
        status = 400
    context = {"form": form, "version": version, "versions": versions_approved(version.plugin),
               "tree": _tree(request), "checked": form["target.nodes"].value() or [],
               "plan": plan, "job": job}
    return render(request, "console/launch.html", context, status=status)


@login_required
@require_POST
def launch_target(request: HttpRequest) -> HttpResponse:
    """How many hosts the picked target expands to, checked as a launch would check it."""
    form = TargetForm(request.POST)
    form.is_valid()
    nodes, hosts = form.cleaned_data["nodes"], host_names(form.cleaned_data["hosts"])
    context: dict = {"empty": not (nodes or hosts)}
    status = 200
    if nodes or hosts:
        try:
            context["count"] = len(targets_checked(request.user, nodes, hosts))
            services.quota_check(request.user, context["count"])
        except ServiceError as exc:
            context["error"], status = exc.detail, exc.status
    return render(request, "console/_target_count.html", context, status=status)
