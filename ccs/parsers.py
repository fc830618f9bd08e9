"""The API's JSON parser: bodies no column could hold are refused before any view runs.
(Its own module: DRF loads parser classes while rest_framework.views is imported.)"""

from typing import Any

from rest_framework import exceptions
from rest_framework.parsers import JSONParser as DRFJSONParser


def _unstorable(value: Any) -> str | None:
    """Why a parsed JSON value cannot be stored as is (PostgreSQL refuses NUL characters in
    text and jsonb, and strings that are not valid UTF-8), or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "contains a NUL character (\\u0000)"
            try:
                item.encode()
            except UnicodeEncodeError:
                return "contains a lone surrogate (not valid Unicode)"
    return None


class JSONParser(DRFJSONParser):
    """JSON bodies, refusing what no column could hold instead of failing at the database."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if reason := _unstorable(data):
            raise exceptions.ParseError(f"JSON {reason}")
        return data
