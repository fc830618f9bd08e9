"""The token endpoint: log in (POST, user name and password → token) and log out (DELETE)."""

from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

TokenOut = inline_serializer("TokenOut", {"token": serializers.CharField()})


class TokenView(ObtainAuthToken):
    """POST: a user's API token (created on first use). DELETE: revoke the caller's token."""

    parser_classes = api_settings.DEFAULT_PARSER_CLASSES

    @extend_schema(
        summary="Log in: exchange a user name and password for an API token",
        description="Send it as `Authorization: Token <token>` on every other request.",
        request=AuthTokenSerializer, responses={200: TokenOut},
        examples=[OpenApiExample("log in", request_only=True,
                                 value={"username": "alice", "password": "correct horse"})],
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        return super().post(request, *args, **kwargs)

    @extend_schema(summary="Log out: revoke the token this request was made with",
                   request=None, responses={204: None})
    def delete(self, request: Request) -> Response:
        if not request.user.is_authenticated:
            raise NotAuthenticated()
        Token.objects.filter(user=request.user).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
