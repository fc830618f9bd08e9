"""The OpenAPI schema's shared parts: the error answers every operation documents, named
enums, and typed path ids. Listed in SPECTACULAR_SETTINGS."""

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object",
    "description": "Every 4xx answer: a sentence, and the fields (or parameters) at fault.",
    "properties": {
        "detail": {"type": "string", "example": "target.nodes: unknown node: corp/x"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "example": {"target.nodes": ["unknown node: corp/x"]},
        },
    },
    "required": ["detail", "errors"],
}
WHY = {
    "400": "Bad input: `errors` names each field or query parameter at fault.",
    "401": "No credentials, or a token that is not valid.",
    "403": "Not allowed: you lack the right, a quota refuses, or you are blocked.",
    "404": "No such object, or it is outside what you may see.",
    "409": "Not possible in the object's current state (named in the answer).",
    "415": "The body is not JSON (or form data).",
    "429": "Over a rate or running-task limit (named in the answer).",
    "503": "Redis or the broker cannot be reached for now: try again after `Retry-After` "
           "seconds (events can be paged without streaming meanwhile).",
}
# Answered by the web server in front of CCS, before the request reaches it (HTML).
URI_TOO_LONG = {
    "description": "The query string is longer than the web server accepts.",
    "content": {"text/html": {"schema": {"type": "string"}}},
}
# Operations that can answer 429 besides their others: quotas, and the login throttle.
RATE_LIMITED = {("post", "/api/v1/tasks/"), ("post", "/api/v1/tasks/{id}/rerun/"),
                ("post", "/api/v1/auth/token/")}
# The event stream: a limit of open streams per user, and none while Redis is down.
STREAMS = {("get", "/api/v1/tasks/{id}/events/")}
# Operations that send a message to the workers, which may find the broker away (503).
SENDS_UNDER = ("/api/v1/tasks/", "/api/v1/subtasks/", "/api/v1/plugin-versions/{id}/revoke/")
# Operations whose body names another object, outside your view a 404 like any other.
NAMES_AN_OBJECT = {("post", "/api/v1/nodes/")}
# Enum names by their values; every choice set of the API is named.
ENUM_NAMES = {
    "TaskStatus": "tasks.states.TaskStatus",
    "SubtaskStatus": "tasks.states.SubTaskStatus",
    "Priority": "tasks.models.Task.Priority",
    "PluginVersionStatus": "plugins.models.PluginVersion.Status",
    "Interpreter": "plugins.models.PluginVersion.Interpreter",
    "AuditAction": "plugins.models.PluginAudit.Action",
    "HostStatus": "permissions.models.Host.Status",
    "HostChannel": "permissions.models.Host.Channel",
    "TreeRight": "permissions.rights.PERMISSIONS",
    "EndedSubtaskStatus": "tasks.states.FINAL_CHOICES",
}


def _codes(method: str, path: str, operation: dict) -> list[str]:
    query = [p for p in operation.get("parameters", []) if p["in"] == "query"]
    codes = ["401"]
    if operation.get("requestBody") or query:
        codes.append("400")
    if method != "get" and not path.startswith("/api/v1/auth/"):
        codes += ["403", "409"]
    if "{" in path or (method, path) in NAMES_AN_OBJECT:
        codes.append("404")
    if operation.get("requestBody"):
        codes.append("415")
    if (method, path) in RATE_LIMITED | STREAMS:
        codes.append("429")
    if (method, path) in STREAMS or (method == "post" and path.startswith(SENDS_UNDER)):
        codes.append("503")
    return sorted(codes)


def error_responses(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """Postprocessing hook: the error answers of every operation, with the Error schema;
    path ids typed as integers; and input shapes closed, as their serializers refuse keys
    they do not declare (StrictSerializerMixin, the `…In` serializers)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for name, component in schemas.items():
        if name.endswith("In") and component.get("type") == "object":
            component["additionalProperties"] = False
    for path, operations in result["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "id":
                    parameter["schema"] = {"type": "integer", "minimum": 0,
                                           "maximum": 10**18 - 1}
            responses = operation.setdefault("responses", {})
            if any(p["in"] == "query" for p in operation.get("parameters", [])):
                responses.setdefault("414", URI_TOO_LONG)
            for code in _codes(method, path, operation):
                responses.setdefault(code, {
                    "description": WHY[code],
                    "content": {"application/json": {"schema": ERROR}},
                })
    return result
