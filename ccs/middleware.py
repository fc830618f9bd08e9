"""Middleware of the console's pages (the API's errors are its exception handler's)."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from kombu.exceptions import OperationalError as BrokerError

from .errors import BROKER_AWAY, BROKER_RETRY_AFTER


class BrokerAway:
    """A page whose action could not send its message to the workers answers 503 with
    Retry-After, saying so, instead of a server error."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not isinstance(exc, BrokerError):
            return None
        response = render(request, "console/refusal.html",
                          {"error": BROKER_AWAY, "back": request.path}, status=503)
        response["Retry-After"] = str(BROKER_RETRY_AFTER)
        return response
