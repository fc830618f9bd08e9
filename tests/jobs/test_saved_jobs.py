"""Saved jobs through the API: saved with the launch's checks and the tree rights, run as a
normal task checked at run time, with a run history and an audit of every change."""

import pytest
from guardian.shortcuts import remove_perm

from jobs.models import JobAudit, JobRun, SavedJob
from tasks.models import Task
from tests.factories import plugin_approved
from tests.permissions import conftest as rights
from tests.permissions.conftest import client_for

pytestmark = pytest.mark.django_db
tree = rights.tree  # the owner, member, viewer and outsider of a small tree
LAUNCH = {"plugin": "ping", "params": {}, "target": {"nodes": ["corp/search/frontend/bj"]},
          "run_as": "root", "control": {"batches": [1, "100%"]}}
JOB = {"name": "ping-bj", "description": "is bj up?", "launch": LAUNCH}


def _create(client, body=JOB):
    return client.post("/api/v1/jobs/", body, format="json")


def test_member_saves_runs_and_reads_the_history(tree):
    member = client_for(tree.member)
    created = _create(member)
    assert created.status_code == 201, created.content
    job = created.json()
    assert (job["name"], job["owner"]) == ("ping-bj", "member")
    assert job["launch"]["target"] == {"nodes": ["corp/search/frontend/bj"], "hosts": []}
    run = member.post(f"/api/v1/jobs/{job['id']}/run/")
    assert run.status_code == 201, run.content
    task = Task.objects.get(pk=run.json()["id"])
    assert (task.creator, task.total_hosts, task.batches) == (tree.member, 2, [1, "100%"])
    runs = member.get(f"/api/v1/jobs/{job['id']}/runs/").json()["results"]
    assert runs == [{"task": task.pk, "status": task.status, "version": 1, "trigger": "manual",
                     "creator": "member", "total_hosts": 2, "at": runs[0]["at"]}]
    actions = list(JobAudit.objects.order_by("id").values_list("action", "task"))
    assert actions == [("create", None), ("run", task.pk)]


def test_newest_approved_is_taken_at_each_run_and_recorded(tree):
    plugin_approved("hello", "echo hello\n")
    member = client_for(tree.member)
    job = _create(member, {**JOB, "launch": {**LAUNCH, "plugin": "hello"}}).json()
    first = member.post(f"/api/v1/jobs/{job['id']}/run/").json()
    plugin_approved("hello", "echo hello again\n")
    second = member.post(f"/api/v1/jobs/{job['id']}/run/").json()
    assert (first["version"], second["version"]) == (1, 2)
    runs = member.get(f"/api/v1/jobs/{job['id']}/runs/").json()["results"]
    assert [r["version"] for r in runs] == [2, 1]


def test_rights_are_checked_when_it_runs_not_when_it_was_saved(tree):
    owner = client_for(tree.owner)
    job = _create(owner, {**JOB, "launch": {**LAUNCH, "target": {"nodes": ["corp/search"]}}})
    assert owner.post(f"/api/v1/jobs/{job.json()['id']}/run/").status_code == 201
    remove_perm("operate_node", tree.owner, tree.node["corp/search"])  # admin_node stays
    refused = owner.post(f"/api/v1/jobs/{job.json()['id']}/run/")
    assert refused.status_code == 403, refused.content
    assert refused.json()["detail"] == "you may not operate 4 of the target hosts"
    assert Task.objects.count() == JobRun.objects.count() == 1


def test_a_job_whose_node_is_gone_answers_409_and_its_owner_may_still_delete_it(tree):
    member = client_for(tree.member)
    job = _create(member).json()
    tree.node["corp/search/frontend/bj"].__class__.objects.filter(
        path="corp/search/frontend/bj").update(path="corp/search/frontend/beijing")
    run = member.post(f"/api/v1/jobs/{job['id']}/run/")
    assert run.status_code == 409, run.content
    assert run.json()["errors"] == {"target.nodes": ["unknown node: corp/search/frontend/bj"]}
    refused = client_for(tree.viewer).delete(f"/api/v1/jobs/{job['id']}/")  # sees, not owns
    assert refused.status_code == 409, refused.content
    assert member.delete(f"/api/v1/jobs/{job['id']}/").status_code == 204


def test_others_see_a_job_as_they_see_its_hosts(tree):
    job = _create(client_for(tree.member)).json()
    assert client_for(tree.viewer).get(f"/api/v1/jobs/{job['id']}/").status_code == 200
    for verb, path in (("get", ""), ("post", "run/"), ("delete", ""), ("get", "runs/")):
        answer = getattr(client_for(tree.outsider), verb)(f"/api/v1/jobs/{job['id']}/{path}")
        assert answer.status_code == 404, (verb, path)
    assert client_for(tree.outsider).get("/api/v1/jobs/").json()["count"] == 0
    # the viewer may see it but not run, change or delete it
    viewer = client_for(tree.viewer)
    assert viewer.post(f"/api/v1/jobs/{job['id']}/run/").status_code == 403
    edit = viewer.patch(f"/api/v1/jobs/{job['id']}/", {"description": "mine"}, format="json")
    assert edit.status_code == 403
    assert viewer.delete(f"/api/v1/jobs/{job['id']}/").status_code == 403
    assert SavedJob.objects.get().description == "is bj up?"


def test_saving_needs_operate_on_every_target_node(tree):
    body = {**JOB, "launch": {**LAUNCH, "target": {"nodes": ["corp/search/frontend"]}}}
    refused = _create(client_for(tree.viewer), body)
    assert refused.status_code == 403
    assert refused.json()["errors"] == {
        "launch.target.nodes": ["not operable: corp/search/frontend"]}
    assert not SavedJob.objects.exists() and not JobAudit.objects.exists()


def test_edit_and_delete_are_audited_and_delete_keeps_the_tasks(tree):
    owner = client_for(tree.owner)
    job = _create(owner).json()
    owner.post(f"/api/v1/jobs/{job['id']}/run/")
    launch = {**LAUNCH, "target": {"nodes": ["corp/search/frontend/sh"]}}
    edited = owner.patch(f"/api/v1/jobs/{job['id']}/", {"name": "ping-sh", "launch": launch},
                         format="json")
    assert edited.status_code == 200, edited.content
    assert edited.json()["name"] == "ping-sh"
    assert edited.json()["launch"]["target"]["nodes"] == ["corp/search/frontend/sh"]
    assert owner.delete(f"/api/v1/jobs/{job['id']}/").status_code == 204
    assert not SavedJob.objects.exists() and Task.objects.count() == 1
    audit = list(JobAudit.objects.order_by("id").values_list("action", "job_name", "actor"))
    assert audit == [("create", "ping-bj", tree.owner.pk), ("run", "ping-bj", tree.owner.pk),
                     ("edit", "ping-sh", tree.owner.pk), ("delete", "ping-sh", tree.owner.pk)]


@pytest.mark.parametrize(("body", "field"), [
    ({"launch": LAUNCH}, "name"),
    ({**JOB, "name": "two words"}, "name"),
    ({**JOB, "launch": {**LAUNCH, "plugin": "nope"}}, "launch.plugin"),
    ({**JOB, "launch": {**LAUNCH, "run_as": "postgres"}}, "launch.run_as"),
    ({**JOB, "launch": {**LAUNCH, "target": {"nodes": ["corp/ads"]}}}, "launch.target.nodes"),
    ({**JOB, "launch": {**LAUNCH, "control": {"batches": [1, "0%"]}}},
     "launch.control.batches[1]"),
    ({**JOB, "launch": {**LAUNCH, "params": {"x": 1}}}, "launch.params.x"),
    ({**JOB, "launch": {**LAUNCH, "callback_url": "ftp://x"}}, "launch.callback_url"),
    ({**JOB, "surprise": 1}, "surprise"),
])
def test_bad_input_names_the_field_and_saves_nothing(tree, body, field):
    answer = _create(client_for(tree.member), body)
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["errors"], answer.json()
    assert not SavedJob.objects.exists()


def test_a_name_is_taken_once(tree):
    member = client_for(tree.member)
    assert _create(member).status_code == 201
    again = _create(member)
    assert again.status_code == 400
    assert again.json()["errors"] == {"name": ["a saved job named ping-bj exists"]}
