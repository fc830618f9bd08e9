"""The console's front page, the task history with its filters, and a host's page."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ccs.errors import NotFound
from permissions.selectors import host_visible

from .. import selectors
from ..forms import HistoryFilters
from ..states import TASK_ACTIVE

TASKS_PAGE = 50


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """What runs now and what ran last, for this user's view."""
    tasks = selectors.tasks_history(request.user)
    context = {"active": tasks.filter(status__in=TASK_ACTIVE)[:20], "recent": tasks[:20]}
    return render(request, "console/home.html", context)


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    filters = HistoryFilters(request.GET)
    if not filters.is_valid():
        context = {"filters": filters, "page": Paginator([], TASKS_PAGE).get_page(1)}
        return render(request, "console/history.html", context, status=400)
    chosen = {k: v for k, v in filters.cleaned_data.items() if k != "page"}
    tasks = selectors.tasks_history(request.user, **chosen)
    page = Paginator(tasks, TASKS_PAGE).get_page(filters.cleaned_data["page"])
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "console/history.html",
                  {"filters": filters, "page": page, "query": query.urlencode()})


@login_required
@require_GET
def host_page(request: HttpRequest, hostname: str) -> HttpResponse:
    """A host: where it hangs, how it is reached, when it was last seen, and its tasks."""
    try:
        host = host_visible(request.user, hostname)
    except NotFound as exc:
        raise Http404(exc.detail) from None
    subtasks = selectors.host_subtasks(request.user, host.pk)
    page = Paginator(subtasks, TASKS_PAGE).get_page(request.GET.get("page"))
    return render(request, "console/host.html", {"host": host, "page": page})
