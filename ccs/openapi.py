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
}
# Operations that can answer 429 besides their others: quotas, and the login throttle.
RATE_LIMITED = {("post", "/api/v1/tasks/"), ("post", "/api/v1/tasks/{id}/rerun/"),
                ("post", "/api/v1/auth/token/")}
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
    if "{" in path:
        codes.append("404")
    if operation.get("requestBody"):
        codes.append("415")
    if (method, path) in RATE_LIMITED:
        codes.append("429")
    return sorted(codes)


def error_responses(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """Postprocessing hook: the error answers of every operation, with the Error schema, and
    path ids typed as integers."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "id":
                    parameter["schema"] = {"type": "integer", "minimum": 0,
                                           "maximum": 10**18 - 1}
            responses = operation.setdefault("responses", {})
            for code in _codes(method, path, operation):
                responses.setdefault(code, {
                    "description": WHY[code],
                    "content": {"application/json": {"schema": ERROR}},
                })
    return result
