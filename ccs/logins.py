"""Login throttling (django-axes): the API token endpoint, and what a locked-out login is
answered, on the API and in the admin."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response


def _lockout() -> tuple[int, str]:
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    return seconds, (f"too many failed logins: try again in {seconds // 60} minutes, or ask an "
                     "admin to clear the lockout")


class TokenLogin(ObtainAuthToken):
    """`POST auth/token`: a token for a username and password; 429 while the address or the
    username is locked out, even for the right password."""

    def post(self, request: Request, *args, **kwargs) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            # axes marks the request it was given (DRF's) when it refuses the login
            if getattr(request, "axes_locked_out", False):
                seconds, message = _lockout()
                raise Throttled(wait=seconds, detail=message) from None
            raise


def locked_out(request: HttpRequest, response: HttpResponse | None = None,
               credentials: dict | None = None) -> HttpResponse:
    """The admin's answer to a locked-out login: 429, with Retry-After."""
    seconds, message = _lockout()
    answer = HttpResponse(message, status=429, content_type="text/plain; charset=utf-8")
    answer["Retry-After"] = str(seconds)
    return answer
