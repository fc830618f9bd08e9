"""The console's saved job pages: the list, one job with its runs (run it, delete it), and
saving or changing one from the launch form (tasks.views.launch)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from ccs.errors import NotFound, ServiceError
from tasks.views.common import refusal

from . import selectors, services
from .forms import ScheduleForm
from .models import SavedJob


def _job(request: HttpRequest, pk: int) -> SavedJob:
    try:
        return selectors.saved_job_visible(request.user, pk)
    except NotFound as exc:
        raise Http404(exc.detail) from None


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = selectors.saved_jobs_visible_to(request.user)
    return render(request, "console/jobs.html", {"jobs": jobs})


@login_required
@require_GET
def job_page(request: HttpRequest, pk: int) -> HttpResponse:
    """A job: its launch, its schedules with their next fire times and last occurrences, and
    its runs."""
    job = _job(request, pk)
    return render(request, "console/job.html", _job_context(job, ScheduleForm()))


def _job_context(job: SavedJob, form: ScheduleForm) -> dict:
    schedules = [{"schedule": s, "upcoming": selectors.upcoming(s, 3),
                  "last": selectors.schedule_occurrences(s).first()}
                 for s in job.schedules.select_related("owner")]
    return {"job": job, "runs": selectors.saved_job_runs(job)[:50], "schedules": schedules,
            "schedule_form": form}


@login_required
@require_POST
def schedule_add(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job(request, pk)
    form = ScheduleForm(request.POST)
    if form.is_valid():
        try:
            services.schedule_create(actor=request.user, job_id=job.pk, **form.arguments())
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            return redirect("console:job", job.pk)
    status = 403 if form.forbidden else 400
    return render(request, "console/job.html", _job_context(job, form), status=status)


@login_required
@require_POST
def schedule_change(request: HttpRequest, pk: str, op: str) -> HttpResponse:
    """Pause, resume or delete a schedule, then back to its job."""
    try:
        schedule = selectors.schedule_visible(request.user, int(pk))
        if op == "delete":
            services.schedule_delete(actor=request.user, schedule_id=schedule.pk)
        else:
            services.schedule_edit(actor=request.user, schedule_id=schedule.pk,
                                   paused=op == "pause")
    except NotFound as exc:
        raise Http404(exc.detail) from None
    except ServiceError as exc:
        return refusal(request, exc, back=f"/jobs/{schedule.job_id}/")
    return redirect("console:job", schedule.job_id)


@login_required
@require_POST
def job_run(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job(request, pk)
    try:
        task = services.saved_job_run(actor=request.user, job_id=job.pk)
    except ServiceError as exc:
        return refusal(request, exc, back=request.path.removesuffix("run/"))
    return redirect("console:task", task.pk)


@login_required
@require_POST
def job_delete(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job(request, pk)
    try:
        services.saved_job_delete(actor=request.user, job_id=job.pk)
    except ServiceError as exc:
        return refusal(request, exc, back=request.path.removesuffix("delete/"))
    messages.success(request, f"Deleted saved job {job.name}; the tasks it started stay.")
    return redirect("console:jobs")
