"""The OpenAPI schema: valid, every operation summarized with its error answers and request
examples, named enums; and the API doing what it documents (filters, ids, slashes)."""

import re

import pytest
from openapi_spec_validator import validate

from plugins.models import Plugin
from tasks.states import TaskStatus
from tests.factories import hosts_make

pytestmark = pytest.mark.django_db
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def schema(api) -> dict:
    response = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def test_the_schema_is_valid_openapi(schema):
    validate(schema)
    assert len(list(_operations(schema))) >= 44


def test_every_operation_has_a_summary_of_its_own(schema):
    summaries = {}
    for method, path, operation in _operations(schema):
        assert operation.get("summary"), f"{method} {path}"
        summaries.setdefault(operation["summary"], []).append(f"{method} {path}")
    assert [ops for ops in summaries.values() if len(ops) > 1] == []


def test_every_operation_documents_its_4xx_with_the_error_schema(schema):
    assert set(schema["components"]["schemas"]["Error"]["properties"]) == {"detail", "errors"}
    for method, path, operation in _operations(schema):
        errors = {code: r for code, r in operation["responses"].items() if code.startswith("4")}
        assert "401" in errors, f"{method} {path}"
        if "{id}" in path:
            assert "404" in errors, f"{method} {path}"
        if operation.get("requestBody") or any(p["in"] == "query"
                                               for p in operation.get("parameters", [])):
            assert "400" in errors, f"{method} {path}"
        for code, response in errors.items():
            if code == "414":  # from the web server, before CCS
                continue
            ref = response["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/Error", f"{method} {path} {code}"


def test_every_request_body_is_json_with_an_example(schema):
    for method, path, operation in _operations(schema):
        if body := operation.get("requestBody"):
            assert list(body["content"]) == ["application/json"], f"{method} {path}"
            assert body["content"]["application/json"].get("examples"), f"{method} {path}"


def test_enums_are_named_and_batches_are_counts_or_percentages(schema):
    components = schema["components"]["schemas"]
    assert not [name for name in components if re.search(r"[0-9a-f]{3}Enum$", name)]
    assert components["TaskStatus"]["enum"] == list(TaskStatus.values)
    assert {"succeeded", "failed", "stopping"} <= set(components["TaskStatus"]["enum"])
    batch = components["ControlIn"]["properties"]["batches"]["items"]
    assert [alt["type"] for alt in batch["oneOf"]] == ["integer", "string"]
    assert re.fullmatch(batch["oneOf"][1]["pattern"], "10%")
    events = schema["paths"]["/api/v1/tasks/{id}/events/"]["get"]["responses"]["200"]
    assert set(events["content"]) == {"application/json", "text/event-stream"}


def _sample(parameter: dict, schema: dict) -> object:
    """A valid value of a query parameter."""
    spec = parameter["schema"]
    if "$ref" in spec:
        spec = schema["components"]["schemas"][spec["$ref"].rsplit("/", 1)[1]]
    if "enum" in spec:
        return spec["enum"][0]
    if "example" in spec:
        return spec["example"]
    return spec.get("minimum", 1) if spec["type"] == "integer" else "x"


def _list_operations(schema: dict) -> list[tuple[str, dict]]:
    return [
        (path, {p["name"]: _sample(p, schema) for p in op["parameters"] if p["in"] == "query"})
        for method, path, op in _operations(schema)
        if method == "get" and any(p["in"] == "query" for p in op.get("parameters", []))
    ]


def test_unknown_query_parameters_answer_400_naming_them(api, schema, builtins):
    hosts_make("dc1", 1, port=1)
    task = api.post("/api/v1/tasks/", {"plugin": "ping", "target": {"hosts": ["dc1-t000"]},
                                       "run_as": "root"}, format="json").json()
    node = api.get("/api/v1/nodes/", {"path": "corp"}).json()["results"][0]
    version = api.get("/api/v1/plugin-versions/").json()["results"][0]
    job = api.post("/api/v1/jobs/", {"name": "ping", "launch": {
        "plugin": "ping", "target": {"hosts": ["dc1-t000"]}, "run_as": "root"}}, format="json")
    schedule = api.post(f"/api/v1/jobs/{job.json()['id']}/schedules/", {"cron": "0 3 * * *"},
                        format="json")
    subscription = api.post("/api/v1/subscriptions/", {
        "channel": "email", "address": "a@example.com", "events": ["task.failed"]},
        format="json")
    ids = {"tasks": task["id"], "nodes": node["id"], "plugin-versions": version["id"],
           "plugins": version["plugin_id"], "jobs": job.json()["id"],
           "schedules": schedule.json()["id"], "subscriptions": subscription.json()["id"]}
    for path, known in _list_operations(schema):
        url = path.replace("{id}", str(ids.get(path.split("/")[3])))
        documented = api.get(url, known)
        assert documented.status_code == 200, (url, documented.json())
        response = api.get(url, {"colour": "red"})
        assert response.status_code == 400, url
        assert "unknown query parameter" in response.json()["errors"]["colour"][0]


@pytest.mark.parametrize(("url", "params", "field"), [
    ("/api/v1/tasks/", {"status": "finished"}, "status"),
    ("/api/v1/tasks/", {"limit": 10**20}, "limit"),
    ("/api/v1/tasks/", {"offset": -1}, "offset"),
    ("/api/v1/hosts/", {"status": "sleepy"}, "status"),
    ("/api/v1/hosts/", {"datacenter": "dc\x001"}, "datacenter"),
    ("/api/v1/plugin-versions/", {"plugin": "ping"}, "plugin"),
])
def test_bad_filter_values_answer_400_naming_the_parameter(api, url, params, field):
    response = api.get(url, params)
    assert response.status_code == 400
    assert field in response.json()["errors"]


@pytest.mark.parametrize("url", ["/api/v1/tasks/", "/api/v1/hosts/", "/api/v1/plugins/"])
def test_a_query_parameter_given_twice_answers_400_naming_it(api, url):
    # schemathesis: tasks/?offset=false&...&offset=0.0 was answered 200 (the last one won)
    response = api.get(f"{url}?offset=1&offset=0&limit=5")
    assert response.status_code == 400
    assert response.json()["errors"] == {"offset": ["given more than once"]}


@pytest.mark.parametrize(("body", "field"), [
    # schemathesis: 2,001 NEL characters were trimmed to "" and a plugin was made
    ({"name": "spaces", "description": "\u0085" * 2001}, "description"),
    ({"name": "spaces", "description": " " * 1999 + "long"}, "description"),
    ({"name": " spaces "}, "name"),
])
def test_text_is_checked_as_sent_not_after_trimming(api, body, field):
    response = api.post("/api/v1/plugins/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not Plugin.objects.filter(name="spaces").exists()


def test_documented_filters_filter(api, builtins):
    hosts_make("dc1", 2, port=1)
    hosts_make("dc2", 1, port=1)
    for plugin in ("ping", "sysinfo"):
        api.post("/api/v1/tasks/", {"plugin": plugin, "target": {"nodes": ["corp/test"]},
                                    "run_as": "root"}, format="json")
    assert [t["plugin"] for t in api.get("/api/v1/tasks/", {"plugin": "ping"}).json()
            ["results"]] == ["ping"]
    assert api.get("/api/v1/tasks/", {"status": "succeeded"}).json()["count"] == 0
    assert api.get("/api/v1/tasks/", {"status": "pending"}).json()["count"] == 2
    assert api.get("/api/v1/tasks/", {"creator": "nobody"}).json()["count"] == 0
    assert [p["name"] for p in api.get("/api/v1/plugins/", {"name": "sleep"}).json()
            ["results"]] == ["sleep"]
    assert api.get("/api/v1/hosts/", {"datacenter": "dc2"}).json()["count"] == 1
    assert api.get("/api/v1/hosts/", {"node": "corp/test"}).json()["count"] == 3
    assert api.get("/api/v1/hosts/", {"node": "corp/test/dc1"}).json()["count"] == 2


def test_paths_work_with_and_without_the_trailing_slash(api, builtins):
    hosts_make("dc1", 1, port=1)
    body = {"plugin": "ping", "target": {"hosts": ["dc1-t000"]}, "run_as": "root"}
    created = api.post("/api/v1/tasks", body, format="json")
    assert created.status_code == 201, created.content
    task_id = created.json()["id"]
    assert api.get(f"/api/v1/tasks/{task_id}").json()["id"] == task_id
    assert api.post(f"/api/v1/tasks/{task_id}/pause").status_code == 202
    assert api.get("/api/v1/tasks").json()["count"] == 1


def test_ids_that_are_not_numbers_answer_a_json_404(api):
    for url in ("/api/v1/tasks/null/stop/", "/api/v1/tasks/1e3/", "/api/v1/hosts/x/",
                f"/api/v1/tasks/{10**20}/", "/api/v1/nowhere/"):
        response = api.post(url) if url.endswith("stop/") else api.get(url)
        assert response.status_code == 404, url
        assert response.json()["detail"], url
    assert api.get("/api/v1/tasks/9999/").json()["detail"] == (
        "no task 9999 (or you may not see it)")


@pytest.mark.parametrize(("url", "body", "field", "words"), [
    ("/api/v1/tasks/", '{"plugin": "ping", "params": {"x": "a\\u0000"}, "run_as": "root", '
     '"target": {"hosts": ["h"]}}', "body", "NUL"),
    ("/api/v1/plugins/", '{"name": "ok", "description": "\\ud800"}', "body", "surrogate"),
    ("/api/v1/plugins/", '{"name": 0}', "name", "must be a string"),
    ("/api/v1/tasks/", '{"plugin": "ping", "run_as": "root", "target": {"nodes": [7]}}',
     "target.nodes", "must be a string"),
    ("/api/v1/nodes/", '{"name": "x", "parent": 1, "colour": "red"}', "colour", "unknown field"),
])
def test_bodies_no_column_could_hold_answer_400(api, url, body, field, words):
    response = api.post(url, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()
    assert words in str(response.json())
