"""Plugins and versions through the REST API: create, read, list; bad input answers 400
naming the field and changes nothing."""

import pytest
from rest_framework.test import APIClient

from plugins.models import Plugin, PluginAudit, PluginVersion
from tests.plugins.conftest import client_for

pytestmark = pytest.mark.django_db

GOOD_VERSION = {
    "interpreter": "python3",
    "body": "import sys\nprint(sys.stdin.read())\n",
    "params_schema": {"type": "object", "properties": {"x": {"type": "string"}}},
    "run_as": ["nobody"],
    "timeout": 20,
}


def test_create_plugin_and_first_version(people):
    api = client_for(people.author)
    response = api.post("/api/v1/plugins/", {"name": "echo", "description": "echoes"},
                        format="json")
    assert response.status_code == 201, response.content
    plugin = response.json()
    assert (plugin["name"], plugin["owner"]) == ("echo", "author")

    response = api.post(f"/api/v1/plugins/{plugin['id']}/versions/", GOOD_VERSION, format="json")
    assert response.status_code == 201, response.content
    version = response.json()
    assert (version["number"], version["status"], version["author"]) == (1, "draft", "author")
    assert version["params_schema"] == GOOD_VERSION["params_schema"]
    second = api.post(f"/api/v1/plugins/{plugin['id']}/versions/", GOOD_VERSION, format="json")
    assert second.json()["number"] == 2

    listed = api.get(f"/api/v1/plugins/{plugin['id']}/versions/").json()["results"]
    assert [v["number"] for v in listed] == [2, 1]
    assert api.get(f"/api/v1/plugins/{plugin['id']}/").json()["name"] == "echo"
    assert api.get(f"/api/v1/plugin-versions/{version['id']}/").json()["body"] == (
        GOOD_VERSION["body"]
    )


def test_version_defaults_to_no_parameters(people, plugin):
    response = client_for(people.author).post(
        f"/api/v1/plugins/{plugin.pk}/versions/",
        {"interpreter": "sh", "body": "true\n", "run_as": ["root"]}, format="json",
    )
    assert response.status_code == 201
    assert response.json()["params_schema"] == {"type": "object", "additionalProperties": False}
    assert response.json()["timeout"] == 60


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "description": ["x"]}, "description"),
        ({"name": "ok", "owner": "someone"}, "owner"),
        ({}, "name"),
    ],
)
def test_bad_plugin_input_names_the_field(people, body, field):
    response = client_for(people.author).post("/api/v1/plugins/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()
    assert not Plugin.objects.filter(owner=people.author).exists()


def test_duplicate_plugin_name_is_400(people, plugin):
    response = client_for(people.outsider).post("/api/v1/plugins/", {"name": "hello"},
                                                format="json")
    assert response.status_code == 400
    assert "already exists" in response.json()["errors"]["name"][0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"interpreter": "perl"}, "interpreter"),
        ({"body": ""}, "body"),
        ({"body": "   \n"}, "body"),
        ({"body": "echo \x00"}, "body"),
        ({"body": "x" * (256 * 1024 + 1)}, "body"),
        ({"params_schema": []}, "params_schema"),
        ({"params_schema": {"type": "string"}}, "params_schema"),
        ({"params_schema": {"type": "object", "properties": {"x": {"type": "nonsense"}}}},
         "params_schema"),
        ({"params_schema": {"$ref": "https://evil.example/schema.json"}}, "params_schema"),
        ({"run_as": []}, "run_as"),
        ({"run_as": "root"}, "run_as"),
        ({"run_as": ["root", "root"]}, "run_as"),
        ({"run_as": ["Root; rm"]}, "run_as"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 10**9}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"status": "approved"}, "status"),
        ({"signature": "AAAA"}, "signature"),
    ],
)
def test_bad_version_input_names_the_field(people, plugin, change, field):
    response = client_for(people.author).post(
        f"/api/v1/plugins/{plugin.pk}/versions/", {**GOOD_VERSION, **change}, format="json"
    )
    assert response.status_code == 400, response.content
    named = [k for k in response.json()["errors"] if k == field or k.startswith(f"{field}.")]
    assert named, response.json()  # the field, or an item of it ("run_as.0")
    assert not PluginVersion.objects.filter(plugin=plugin).exists()


def test_only_the_owner_adds_versions(people, plugin):
    response = client_for(people.outsider).post(
        f"/api/v1/plugins/{plugin.pk}/versions/", GOOD_VERSION, format="json"
    )
    assert response.status_code == 403
    assert "owner" in response.json()["detail"]
    assert not PluginVersion.objects.filter(plugin=plugin).exists()


def test_patch_refuses_unknown_and_review_fields(people, make_version):
    version = make_version("draft")
    for body, field in (({"status": "approved"}, "status"), ({"reviewer": "me"}, "reviewer"),
                        ({"timeout": -1}, "timeout")):
        response = client_for(people.author).patch(
            f"/api/v1/plugin-versions/{version.pk}/", body, format="json"
        )
        assert response.status_code == 400
        assert field in response.json()["errors"]
    assert PluginVersion.objects.get(pk=version.pk).status == "draft"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/plugins/999999/",
        "/api/v1/plugins/abc/",
        "/api/v1/plugins/99999999999999999999999/",
        "/api/v1/plugins/999999/versions/",
        "/api/v1/plugin-versions/999999/",
        "/api/v1/plugin-versions/99999999999999999999999/",
        "/api/v1/plugin-versions/999999/audit/",
    ],
)
def test_unknown_ids_are_404(people, url):
    response = client_for(people.author).get(url)
    assert response.status_code == 404


def test_actions_on_unknown_versions_are_404(people):
    for action in ("submit", "approve", "retire"):
        response = client_for(people.reviewer).post(f"/api/v1/plugin-versions/999999/{action}/")
        assert response.status_code == 404


def test_version_list_filters_by_status_and_plugin(people, plugin, make_version, builtins):
    make_version("draft")
    pending = make_version("pending")
    api = client_for(people.outsider)
    listed = api.get("/api/v1/plugin-versions/?status=pending").json()["results"]
    assert [v["id"] for v in listed] == [pending.pk]
    listed = api.get(f"/api/v1/plugin-versions/?plugin={plugin.pk}").json()["results"]
    assert [v["number"] for v in listed] == [2, 1]
    bad = api.get("/api/v1/plugin-versions/?status=sleepy")
    assert bad.status_code == 400 and "status" in bad.json()["errors"]
    bad = api.get("/api/v1/plugin-versions/?plugin=x")
    assert bad.status_code == 400 and "plugin" in bad.json()["errors"]


def test_anonymous_is_refused(plugin):
    assert APIClient().get("/api/v1/plugins/").status_code == 401
    assert APIClient().post("/api/v1/plugins/", {"name": "x"}, format="json").status_code == 401


def test_malformed_json_is_400(people, plugin):
    response = client_for(people.author).post(
        f"/api/v1/plugins/{plugin.pk}/versions/", "{nope", content_type="application/json"
    )
    assert response.status_code == 400
    assert "body" in response.json()["errors"]


def test_refused_create_writes_no_audit(people, plugin):
    before = PluginAudit.objects.count()
    client_for(people.author).post(
        f"/api/v1/plugins/{plugin.pk}/versions/", {**GOOD_VERSION, "run_as": []}, format="json"
    )
    assert PluginAudit.objects.count() == before


def test_deeply_nested_json_is_400_not_500(people, plugin):
    deep = "[" * 100_000 + "]" * 100_000
    response = client_for(people.author).post(
        f"/api/v1/plugins/{plugin.pk}/versions/", '{"params_schema": ' + deep + '}',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {"body": ["nested too deeply"]}


def test_empty_patch_is_400(people, make_version):
    version = make_version("draft")
    response = client_for(people.author).patch(
        f"/api/v1/plugin-versions/{version.pk}/", {}, format="json"
    )
    assert response.status_code == 400
    assert "name a field to change" in response.json()["errors"]["non_field_errors"][0]
