"""Checks of plugin input, shared by the services and the admin forms; each names its field."""

import json
import re
from typing import Any

import jsonschema

from ccs.errors import InvalidInput

from .models import PluginVersion

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}\Z")
ACCOUNT = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")
MAX_BODY = 256 * 1024
MAX_SCHEMA = 64 * 1024
MAX_DESCRIPTION = 2000
MAX_COMMENT = 5000
MAX_ACCOUNTS = 32
MAX_TIMEOUT = 24 * 3600


def name_check(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput.field(
            "name", "1-100 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def description_check(description: object) -> str:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidInput.field("description", f"text of at most {MAX_DESCRIPTION} characters")
    return description


def interpreter_check(interpreter: object) -> str:
    if interpreter not in PluginVersion.Interpreter.values:
        allowed = ", ".join(PluginVersion.Interpreter.values)
        raise InvalidInput.field("interpreter", f"must be one of {allowed}")
    return interpreter


def body_check(body: object) -> str:
    if not isinstance(body, str) or not body.strip():
        raise InvalidInput.field("body", "must be a non-empty script")
    if "\x00" in body:
        raise InvalidInput.field("body", "must not contain NUL characters")
    if len(body.encode(errors="replace")) > MAX_BODY:
        raise InvalidInput.field("body", f"at most {MAX_BODY // 1024} KiB")
    return body


def run_as_check(run_as: object) -> list[str]:
    if not isinstance(run_as, list) or not 1 <= len(run_as) <= MAX_ACCOUNTS:
        raise InvalidInput.field("run_as", f"a list of 1 to {MAX_ACCOUNTS} account names")
    for account in run_as:
        if not isinstance(account, str) or not ACCOUNT.match(account):
            raise InvalidInput.field("run_as", f"not an account name: {account!r}")
    if len(set(run_as)) != len(run_as):
        raise InvalidInput.field("run_as", "names an account twice")
    return list(run_as)


def timeout_check(timeout: object) -> int:
    if not isinstance(timeout, int) or isinstance(timeout, bool):
        raise InvalidInput.field("timeout", "must be an integer number of seconds")
    if not 1 <= timeout <= MAX_TIMEOUT:
        raise InvalidInput.field("timeout", f"between 1 and {MAX_TIMEOUT} seconds")
    return timeout


def comment_check(comment: object, *, required: bool) -> str:
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise InvalidInput.field("comment", f"text of at most {MAX_COMMENT} characters")
    if required and not comment.strip():
        raise InvalidInput.field("comment", "a rejection needs a comment saying why")
    return comment.strip()


def reason_check(reason: object) -> str:
    """Why a version is revoked: required, and short enough to read in the audit."""
    if not isinstance(reason, str) or len(reason) > MAX_COMMENT:
        raise InvalidInput.field("reason", f"text of at most {MAX_COMMENT} characters")
    if not reason.strip():
        raise InvalidInput.field("reason", "a revocation needs a reason: the flaw found")
    return reason.strip()


def params_schema_check(schema: object) -> dict:
    """A JSON Schema (draft 2020-12) for an object of parameters, with local references only."""
    if not isinstance(schema, dict):
        raise InvalidInput.field("params_schema", "must be a JSON Schema object")
    if len(json.dumps(schema)) > MAX_SCHEMA:
        raise InvalidInput.field("params_schema", f"at most {MAX_SCHEMA // 1024} KiB")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise InvalidInput.field(
            "params_schema", f"{where}: {exc.message}" if where else exc.message
        ) from None
    if schema.get("type", "object") != "object":
        raise InvalidInput.field("params_schema", "type: parameters are an object")
    if ref := _remote_ref(schema):
        raise InvalidInput.field("params_schema", f"$ref: only local references, not {ref!r}")
    return schema


def _remote_ref(node: Any) -> str | None:
    """The first $ref / $dynamicRef not pointing inside the schema (those would be fetched)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                if not value.startswith("#"):
                    return value
                continue
            if found := _remote_ref(value):
                return found
    elif isinstance(node, list):
        for item in node:
            if found := _remote_ref(item):
                return found
    return None
