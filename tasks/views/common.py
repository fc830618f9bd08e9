"""What the console's views share: finding what the user may see (404 otherwise) and showing
a service's refusal."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from ccs.errors import ServiceError

from .. import selectors
from ..models import Task


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def visible_task(request: HttpRequest, pk: int) -> Task:
    return get_object_or_404(selectors.tasks_visible_to(request.user), pk=pk)


def refusal(request: HttpRequest, exc: ServiceError, back: str) -> HttpResponse:
    """A service's refusal, with its status: into the page's flash area for htmx, else as a
    page saying why, with the way back."""
    context = {"error": exc.detail, "errors": exc.errors, "back": back}
    if not is_htmx(request):
        return render(request, "console/refusal.html", context, status=exc.status)
    response = render(request, "console/_flash.html", context, status=exc.status)
    response["HX-Retarget"] = "#flash"
    response["HX-Reswap"] = "innerHTML"
    return response
