"""API plumbing shared by every app: the one exception handler and the error shape."""

import json
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ServiceError


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail as `{"field.sub": ["message", ...]}`."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(_flatten(value, name))
        return out
    if isinstance(detail, list) and detail and all(isinstance(d, str) for d in detail):
        return {prefix or "non_field_errors": [str(d) for d in detail]}
    if isinstance(detail, list):
        out = {}
        for index, value in enumerate(detail):
            out.update(_flatten(value, f"{prefix}[{index}]" if prefix else str(index)))
        return out
    return {prefix or "non_field_errors": [str(detail)]}


def _summary(errors: dict[str, list[str]]) -> str:
    first_field, messages = next(iter(errors.items()))
    return f"{first_field}: {messages[0]}"


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Every error as `{"detail": ..., "errors": {field: [...]}}` with a 4xx status."""
    if isinstance(exc, ServiceError):
        return Response({"detail": exc.detail, "errors": exc.errors}, status=exc.status)
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        return Response(
            {"detail": _summary(errors), "errors": errors}, status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, RecursionError):
        # JSON nested deeper than Python's parser (or a schema check) can follow.
        message = "nested too deeply"
        return Response({"detail": f"body: {message}", "errors": {"body": [message]}},
                        status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, exceptions.ParseError):
        return Response(
            {"detail": str(exc.detail), "errors": {"body": [str(exc.detail)]}},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, Http404 | DjangoPermissionDenied):
        exc = exceptions.NotFound() if isinstance(exc, Http404) else exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is not None:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        response.data = {"detail": str(detail), "errors": {}}
    return response


class StrictSerializerMixin:
    """Refuse input keys the serializer does not declare, instead of silently dropping them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise exceptions.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class EventStreamRenderer(BaseRenderer):
    """Lets a view accept `text/event-stream`; the stream itself is a StreamingHttpResponse,
    so this renders only errors (as JSON)."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type=None, renderer_context=None) -> bytes:
        return json.dumps(data).encode()


def int_param(value: str | None, name: str, default: int = 0, minimum: int = 0) -> int:
    """A non-negative integer query parameter or header, or a 400 naming it."""
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise exceptions.ValidationError({name: [f"must be an integer of at least {minimum}"]})
    return number
