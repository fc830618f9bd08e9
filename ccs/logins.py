"""Logins: the API token endpoint (log in, log out) with its throttling (django-axes), and
what a locked-out login is answered, on the API and in the admin."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import NotAuthenticated, Throttled, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

TokenOut = inline_serializer("TokenOut", {"token": serializers.CharField()})


def _lockout() -> tuple[int, str]:
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    return seconds, (f"too many failed logins: try again in {seconds // 60} minutes, or ask an "
                     "admin to clear the lockout")


class TokenLogin(ObtainAuthToken):
    """`POST auth/token/`: a token for a username and password; 429 while the address or the
    username is locked out, even for the right password. `DELETE`: revoke the caller's."""

    parser_classes = api_settings.DEFAULT_PARSER_CLASSES

    @extend_schema(
        summary="Log in: exchange a user name and password for an API token",
        description="Send it as `Authorization: Token <token>` on every other request. Too "
        "many failed logins lock the address and the user name out for a while (429).",
        request=AuthTokenSerializer, responses={200: TokenOut},
        examples=[OpenApiExample("log in", request_only=True,
                                 value={"username": "alice", "password": "correct horse"})],
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            # axes marks the request it was given (DRF's) when it refuses the login
            if getattr(request, "axes_locked_out", False):
                seconds, message = _lockout()
                raise Throttled(wait=seconds, detail=message) from None
            raise

    @extend_schema(summary="Log out: revoke the token this request was made with",
                   request=None, responses={204: None})
    def delete(self, request: Request) -> Response:
        if not request.user.is_authenticated:
            raise NotAuthenticated()
        Token.objects.filter(user=request.user).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


def locked_out(request: HttpRequest, response: HttpResponse | None = None,
               credentials: dict | None = None) -> HttpResponse:
    """The admin's answer to a locked-out login: 429, with Retry-After."""
    seconds, message = _lockout()
    answer = HttpResponse(message, status=429, content_type="text/plain; charset=utf-8")
    answer["Retry-After"] = str(seconds)
    return answer
