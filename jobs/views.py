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
    job = _job(request, pk)
    runs = selectors.saved_job_runs(job)[:50]
    return render(request, "console/job.html", {"job": job, "runs": runs})


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
