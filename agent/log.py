"""Agent logs: one line per event, `event key=value ...`, values quoted when they need it."""

from __future__ import annotations

import json
import logging
import re

log = logging.getLogger("ccs.agent")
_PLAIN = re.compile(r"[\w.:/@+,-]+\Z", re.ASCII)


def event(name: str, level: int = logging.INFO, **fields: object) -> None:
    """Log one event; a job id or host id with spaces or newlines cannot forge a second line."""
    if log.isEnabledFor(level):
        log.log(level, " ".join([name, *(f"{k}={_value(v)}" for k, v in fields.items())]))


def _value(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text if _PLAIN.match(text) else json.dumps(text)
