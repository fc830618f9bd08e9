"""API plumbing shared by every app: the one exception handler and the error shape."""

import json
import re
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from kombu.exceptions import OperationalError as BrokerError
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ServiceError, Unavailable

BROKER_RETRY_AFTER = 10  # seconds; a broker restart takes a few


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


def _not_found(context: dict) -> str:
    """"no task 42", from the view's name for its objects and the id asked for."""
    view, pk = context.get("view"), (context.get("kwargs") or {}).get("pk")
    name = getattr(view, "basename", None)
    if name and pk is not None:
        return f"no {name.replace('-', ' ')} {pk} (or you may not see it)"
    return "not found"


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Every error as `{"detail": ..., "errors": {field: [...]}}` with a 4xx status."""
    if isinstance(exc, ServiceError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
        return Response({"detail": exc.detail, "errors": exc.errors}, status=exc.status,
                        headers=headers)
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        return Response(
            {"detail": _summary(errors), "errors": errors}, status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, BrokerError):
        return Response(
            {"detail": "saved, but the message to the workers could not be sent: the broker "
                       "(CCS_BROKER_URL) cannot be reached; retry in a while", "errors": {}},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(BROKER_RETRY_AFTER)})
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
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(_not_found(context))
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is not None:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        response.data = {"detail": str(detail), "errors": {}}
    return response


def _not_text(field: serializers.Field, value: Any) -> bool:
    """A string field given something else (DRF would quietly turn 0 into "0")."""
    if isinstance(field, serializers.ListField) and isinstance(value, list):
        return any(_not_text(field.child, item) for item in value)
    return isinstance(field, serializers.CharField) and value is not None and not isinstance(
        value, str)


class StrictSerializerMixin:
    """Refuse input keys the serializer does not declare, instead of silently dropping them,
    and anything but a string where a string is expected."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise exceptions.ValidationError({name: ["unknown field"] for name in unknown})
            wrong = [n for n, f in self.fields.items() if n in data and _not_text(f, data[n])]
            if wrong:
                raise exceptions.ValidationError({name: ["must be a string"] for name in wrong})
        return super().to_internal_value(data)


def pattern_field(regex: re.Pattern, what: str, **kwargs: Any) -> serializers.RegexField:
    """A string field checked against `regex` as a whole, refused as "not <what>"; the schema
    shows the pattern in the form JSON Schema reads (anchored, without \\A and \\Z)."""
    core = regex.pattern.removeprefix("\\A").removesuffix("\\Z")
    return serializers.RegexField(f"^(?:{core})$", error_messages={"invalid": f"not {what}"},
                                  **kwargs)


class ErrorOut(serializers.Serializer):
    """Every 4xx answer: a sentence, and the fields (or parameters) at fault."""

    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


# Object ids in URLs: digits that fit a bigint; anything else is a 404 from the URL map.
ID = r"[0-9]{1,18}"
INT_MAX = 2**31 - 1  # of an integer column
BIGINT_MAX = 2**63 - 1
MAX_PAGE = 1000


class Page(LimitOffsetPagination):
    """`limit` (at most 1000) and `offset` pagination."""

    max_limit = MAX_PAGE


class FilterIn(serializers.Serializer):
    """Query parameters of a read: only the declared ones; anything else is 400."""

    def to_internal_value(self, data: Any) -> Any:
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            known = ", ".join(sorted(self.fields)) or "none"
            raise exceptions.ValidationError(
                {name: [f"unknown query parameter (known: {known})"] for name in unknown}
            )
        return super().to_internal_value(data)


class QueryIn(FilterIn):
    """Query parameters of a paginated list: its filters, `limit` and `offset`."""

    limit = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, required=False,
                                     help_text=f"rows per page (at most {MAX_PAGE})")
    offset = serializers.IntegerField(min_value=0, max_value=INT_MAX, required=False,
                                      help_text="rows to skip")


def page_of(view: Any, rows: Any, serializer_class: type[serializers.Serializer]) -> Response:
    """One page of `rows`, serialized, in the paginator's envelope (count, next, results)."""
    page = view.paginate_queryset(rows)
    return view.get_paginated_response(serializer_class(page, many=True).data)


def query_valid(request: Request, serializer_class: type[serializers.Serializer]) -> dict:
    """The request's query parameters checked by `serializer_class`, or a 400 naming them."""
    data = serializer_class(data=request.query_params.dict())  # a repeated one: the last
    data.is_valid(raise_exception=True)
    if issubclass(serializer_class, QueryIn):  # the paginator reads limit and offset
        return {k: v for k, v in data.validated_data.items() if k not in ("limit", "offset")}
    return dict(data.validated_data)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """URLs that match nothing: the API's error shape under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"no such URL: {request.path}", "errors": {}}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "server error; see the server log", "errors": {}},
                            status=500)
    return defaults.server_error(request)


class EventStreamRenderer(BaseRenderer):
    """Lets a view accept `text/event-stream`; the stream itself is a StreamingHttpResponse,
    so this renders only errors (as JSON)."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type=None, renderer_context=None) -> bytes:
        return json.dumps(data).encode()


def int_param(value: str | None, name: str, default: int = 0, minimum: int = 0) -> int:
    """A non-negative integer query parameter or header (at most a bigint), or a 400 naming
    it."""
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if not minimum <= number <= BIGINT_MAX:
        raise exceptions.ValidationError(
            {name: [f"must be an integer from {minimum} to {BIGINT_MAX}"]})
    return number
