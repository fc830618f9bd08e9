"""What every console page shows of plugin review: how many versions wait, for those who may
open the admin's review queue."""

from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import SimpleLazyObject

from .selectors import versions_pending


def review_queue(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not (user.is_staff and user.has_perm("plugins.view_pluginversion")):
        return {}
    # Counted only if a page shows it.
    waiting = SimpleLazyObject(lambda: versions_pending().count())
    return {"review": {"waiting": waiting,
                       "url": reverse("admin:plugins_pluginversion_queue")}}
