"""The task page: counts per state, elapsed time, grouped outputs and a paged host table, each
refreshed when the task's event stream brings changes; and steering the task or one host."""

import json
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from ccs.errors import Forbidden, InvalidInput, ServiceError

from .. import selectors, services
from ..forms import HostFilters, RerunForm
from ..models import Task
from ..permissions import CanOperateSubtask, CanOperateTask
from ..states import ON_HOST, OUTCOME_FAILED
from .common import is_htmx, refusal, visible_task

HOSTS_PAGE = 100
BAR_ORDER = ("success", "failed", "timeout", "lost", "stopped", "running", "paused", "queued",
             "held", "pending")
TASK_OPS = {"pause": services.task_pause, "resume": services.task_resume,
            "stop": services.task_stop}
SUBTASK_OPS = {"pause": services.subtask_pause, "resume": services.subtask_resume,
               "stop": services.subtask_stop}
# What a host shows between an operator's request and its agent's confirmation.
ASKED = {"pause": "pausing", "resume": "resuming", "stop": "stopping"}


def _head(request: HttpRequest, task: Task) -> dict:
    counts = selectors.task_counts(task.pk)
    phase = selectors.task_phase(task, counts)
    return {
        "task": task, "counts": counts, "phase": phase, "on_host": ON_HOST,
        "bar": [(state, counts[state]) for state in BAR_ORDER if counts.get(state)],
        "operable": selectors.task_operable_by(request.user, task),
        "rerunnable": [(s, counts[s]) for s in sorted(OUTCOME_FAILED) if counts.get(s)],
    }


def _stopping(task: Task) -> bool:
    return selectors.task_phase(task, selectors.task_counts(task.pk)) == "stopping"


def _hosts(task: Task, query: dict, stopping: bool) -> tuple[dict, int]:
    """The host table's context for these filters, and its status (400 for a bad filter)."""
    filters = HostFilters(query, selectors.task_datacenters(task.pk))
    rows = selectors.host_rows(task.pk).none()
    if filters.is_valid():
        chosen = {k: filters.cleaned_data[k] for k in ("status", "datacenter", "group", "host")}
        try:
            rows = selectors.host_rows(task.pk, **chosen)
        except InvalidInput as exc:
            for name, messages in exc.errors.items():
                filters.add_error(name if name in filters.fields else None, messages)
    page = Paginator(rows, HOSTS_PAGE).get_page(filters.data.get("page"))
    kept = {k: v for k, v in filters.data.items() if v and k != "page" and k in filters.fields}
    context = {
        "filters": filters, "page": page, "query": urlencode(kept),
        "shown": {**kept, "page": page.number},  # what the table's refreshes ask for again
        "stopping": stopping,  # its hosts still on their host show as stopping
    }
    return context, 200 if filters.is_valid() else 400


@login_required
@require_GET
def task_page(request: HttpRequest, pk: int) -> HttpResponse:
    task = visible_task(request, pk)
    after = task.event_seq  # read first: what changes after it arrives as events
    head = _head(request, task)
    hosts, status = _hosts(task, request.GET, head["phase"] == "stopping")
    context = {**head, **hosts, "after": after, "params": json.dumps(task.params),
               "groups": selectors.task_summary(task.pk)}
    return render(request, "console/task.html", context, status=status)


@login_required
@require_GET
def task_head(request: HttpRequest, pk: int) -> HttpResponse:
    task = visible_task(request, pk)
    return render(request, "console/_task_head.html", _head(request, task))


@login_required
@require_GET
def task_groups(request: HttpRequest, pk: int) -> HttpResponse:
    task = visible_task(request, pk)
    context = {"task": task, "groups": selectors.task_summary(task.pk)}
    return render(request, "console/_task_groups.html", context)


@login_required
@require_GET
def task_hosts(request: HttpRequest, pk: int) -> HttpResponse:
    task = visible_task(request, pk)
    context, status = _hosts(task, request.GET, _stopping(task))
    context.update(task=task, operable=selectors.task_operable_by(request.user, task))
    return render(request, "console/_task_hosts.html", context, status=status)


@login_required
@require_POST
def task_steer(request: HttpRequest, pk: int, op: str) -> HttpResponse:
    """Pause, resume or stop the whole task."""
    task = visible_task(request, pk)
    back = reverse("console:task", args=[task.pk])
    try:
        if not selectors.task_operable_by(request.user, task):
            raise Forbidden(CanOperateTask.message)
        task = TASK_OPS[op](actor=request.user, task_id=task.pk)
    except ServiceError as exc:
        return refusal(request, exc, back)
    if is_htmx(request):
        return render(request, "console/_task_head.html", _head(request, task))
    return redirect(back)


@login_required
@require_POST
def subtask_steer(request: HttpRequest, pk: int, op: str) -> HttpResponse:
    """Pause, resume or stop one host of a task; its row shows what was asked until the
    agent confirms."""
    subtask = get_object_or_404(selectors.subtasks_visible_to(request.user), pk=pk)
    task = visible_task(request, subtask.task_id)
    back = reverse("console:task", args=[task.pk])
    try:
        if not selectors.subtask_operable_by(request.user, subtask):
            raise Forbidden(CanOperateSubtask.message)
        SUBTASK_OPS[op](actor=request.user, subtask_id=subtask.pk)
    except ServiceError as exc:
        return refusal(request, exc, back)
    if not is_htmx(request):
        return redirect(back)
    row = selectors.host_rows(task.pk).get(pk=subtask.pk)
    context = {"task": task, "row": row, "operable": True, "stopping": _stopping(task),
               "asked": ASKED[op] if row.status == subtask.status else ""}
    return render(request, "console/_host_row.html", context)


@login_required
@require_POST
def task_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    """A new task on the hosts of this one that failed, timed out or were lost."""
    task = visible_task(request, pk)
    form = RerunForm(request.POST)
    try:
        if not form.is_valid():
            raise InvalidInput.field("statuses", form.errors["statuses"][0])
        rerun = services.task_rerun(actor=request.user, task_id=task.pk,
                                    statuses=form.cleaned_data["statuses"])
    except ServiceError as exc:
        return refusal(request, exc, reverse("console:task", args=[task.pk]))
    return redirect("console:task", rerun.pk)
