"""Who sees and operates what: the owner / member / group member / viewer / outsider matrix."""

import pytest
from guardian.shortcuts import assign_perm, remove_perm

from permissions.models import Host, Node, RightsAudit
from permissions.services import node_move
from tasks.models import Task

from .conftest import client_for

pytestmark = pytest.mark.django_db


def _paths(response) -> set[str]:
    return {n["path"] for n in response.json()["results"]}


def _hostnames(response) -> set[str]:
    return {h["hostname"] for h in response.json()["results"]}


def test_nodes_list_shows_only_what_each_user_may_see(tree):
    search = {
        "corp/search",
        "corp/search/frontend",
        "corp/search/frontend/bj",
        "corp/search/frontend/sh",
    }
    assert _paths(client_for(tree.owner).get("/api/v1/nodes/")) == search
    assert _paths(client_for(tree.viewer).get("/api/v1/nodes/")) == search
    assert _paths(client_for(tree.member).get("/api/v1/nodes/")) == {"corp/search/frontend/bj"}
    assert _paths(client_for(tree.grouped).get("/api/v1/nodes/")) == {"corp/search/frontend/sh"}
    assert _paths(client_for(tree.outsider).get("/api/v1/nodes/")) == set()


def test_path_lookup_and_out_of_scope_nodes_are_404(tree):
    bj = tree.node["corp/search/frontend/bj"]
    member = client_for(tree.member)
    assert _paths(member.get("/api/v1/nodes/", {"path": bj.path})) == {bj.path}
    assert _paths(member.get("/api/v1/nodes/", {"path": "corp/ads"})) == set()
    assert member.get(f"/api/v1/nodes/{bj.pk}/").status_code == 200
    for path in ("corp/ads", "corp/search", "corp/search/frontend/sh"):
        node = tree.node[path]
        assert member.get(f"/api/v1/nodes/{node.pk}/").status_code == 404
        assert member.get(f"/api/v1/nodes/{node.pk}/hosts/").status_code == 404
        assert member.get(f"/api/v1/nodes/{node.pk}/grants/").status_code == 404


def test_hosts_are_filtered_by_scope_and_query(tree):
    owner = client_for(tree.owner)
    assert _hostnames(owner.get("/api/v1/hosts/")) == {"bj-t000", "bj-t001", "sh-t000", "sh-t001"}
    assert _hostnames(owner.get("/api/v1/hosts/", {"node": "corp/search/frontend/sh"})) == {
        "sh-t000",
        "sh-t001",
    }
    assert _hostnames(owner.get("/api/v1/hosts/", {"datacenter": "dc2"})) == set()
    assert _hostnames(client_for(tree.grouped).get("/api/v1/hosts/")) == {"sh-t000", "sh-t001"}
    assert _hostnames(client_for(tree.outsider).get("/api/v1/hosts/")) == set()
    ads = Host.objects.get(hostname="ads-t000")
    assert owner.get(f"/api/v1/hosts/{ads.pk}/").status_code == 404
    bj = tree.node["corp/search/frontend/bj"]
    assert _hostnames(client_for(tree.member).get(f"/api/v1/nodes/{bj.pk}/hosts/")) == {
        "bj-t000",
        "bj-t001",
    }


def _grant(client, node: Node, method: str = "post", **body):
    return getattr(client, method)(f"/api/v1/nodes/{node.pk}/grants/", body, format="json")


def test_only_admins_at_or_above_grant_and_revoke_and_each_is_audited(tree):
    sh = tree.node["corp/search/frontend/sh"]
    denied = _grant(
        client_for(tree.member),
        tree.node["corp/search/frontend/bj"],
        user="outsider",
        permission="view_node",
    )
    assert denied.status_code == 403
    assert (
        _grant(client_for(tree.outsider), sh, user="outsider", permission="view_node").status_code
        == 404
    )
    assert RightsAudit.objects.count() == 0

    owner = client_for(tree.owner)
    granted = _grant(owner, sh, user="outsider", permission="operate_node")
    assert granted.status_code == 201, granted.content
    assert {"node": sh.path, "user": "outsider", "permission": "operate_node"} in granted.json()
    assert _hostnames(client_for(tree.outsider).get("/api/v1/hosts/")) == {"sh-t000", "sh-t001"}

    revoked = _grant(owner, sh, "delete", user="outsider", permission="operate_node")
    assert revoked.status_code == 200
    assert _hostnames(client_for(tree.outsider).get("/api/v1/hosts/")) == set()
    audit = list(
        RightsAudit.objects.order_by("id").values_list(
            "actor__username", "action", "node_path", "principal", "permission"
        )
    )
    assert audit == [
        ("owner", "grant", sh.path, "user:outsider", "operate_node"),
        ("owner", "revoke", sh.path, "user:outsider", "operate_node"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user": "nobody-here", "permission": "view_node"}, "user"),
        ({"group": "NOPE", "permission": "view_node"}, "group"),
        ({"user": "member", "permission": "root"}, "permission"),
        ({"permission": "view_node"}, "user"),
        ({"user": "member", "group": "OP", "permission": "view_node"}, "user"),
    ],
)
def test_bad_grants_name_the_field(tree, body, field):
    response = _grant(client_for(tree.owner), tree.node["corp/search"], **body)
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert RightsAudit.objects.count() == 0


def _create(client, **target):
    return client.post(
        "/api/v1/tasks/",
        {
            "plugin": "ping",
            "params": {},
            "target": target,
            "run_as": "root",
        },
        format="json",
    )


def test_task_creation_needs_operate_on_every_target_host(tree):
    member, grouped = client_for(tree.member), client_for(tree.grouped)
    assert _create(member, nodes=["corp/search/frontend/bj"]).status_code == 201
    assert _create(grouped, nodes=["corp/search/frontend/sh"]).status_code == 201
    assert _create(client_for(tree.owner), nodes=["corp/search"]).status_code == 201
    # the viewer sees corp/search but operates nothing: refused, naming what it sees
    refused = _create(client_for(tree.viewer), nodes=["corp/search/frontend"])
    assert refused.status_code == 403
    body = refused.json()
    assert "4 of the target hosts" in body["detail"]
    assert body["errors"]["target"] == [
        "not operable: bj-t000",
        "not operable: bj-t001",
        "not operable: sh-t000",
        "not operable: sh-t001",
    ]
    named = _create(client_for(tree.viewer), hosts=["bj-t001"])
    assert named.status_code == 403
    assert named.json()["errors"] == {"target": ["not operable: bj-t001"]}
    # a host the member cannot even see is, to the member, a host that does not exist
    assert _create(member, nodes=["corp/search/frontend/bj"], hosts=["sh-t000"]).status_code == 400
    assert Task.objects.count() == 3


def test_absent_and_out_of_sight_targets_get_one_answer(tree):
    """No refusal tells what exists outside a user's view: a node or host the user cannot see
    is answered exactly as one that does not exist, and no host under it is named."""
    outsider = client_for(tree.outsider)
    for field, hidden, absent in (
        ("nodes", "corp/search/frontend/bj", "corp/nowhere"),
        ("hosts", "bj-t000", "no-such-host"),
    ):
        answers = [_create(outsider, **{field: [name]}) for name in (hidden, absent)]
        assert [a.status_code for a in answers] == [400, 400]
        kind = field[:-1]
        assert [a.json() for a in answers] == [
            {"detail": f"target.{field}: unknown {kind}: {name}",
             "errors": {f"target.{field}": [f"unknown {kind}: {name}"]}}
            for name in (hidden, absent)
        ]
    assert Task.objects.count() == 0


def test_refusal_lists_at_most_20_hosts_and_the_total(tree):
    from tests.factories import hosts_make

    hosts_make("dc2", 25, port=1, node_path="corp/search/big", prefix="big")
    refused = _create(client_for(tree.viewer), nodes=["corp/search"])
    assert refused.status_code == 403
    assert "29 of the target hosts" in refused.json()["detail"]
    assert len(refused.json()["errors"]["target"]) == 20


def test_tasks_are_visible_to_creator_and_to_who_can_view_all_their_hosts(tree):
    created = _create(client_for(tree.member), nodes=["corp/search/frontend/bj"]).json()
    url = f"/api/v1/tasks/{created['id']}/"
    assert client_for(tree.member).get(url).status_code == 200
    assert client_for(tree.viewer).get(url).status_code == 200  # RD views corp/search
    assert client_for(tree.owner).get(url).status_code == 200
    assert client_for(tree.grouped).get(url).status_code == 404
    assert client_for(tree.outsider).get(url).status_code == 404
    assert [t["id"] for t in client_for(tree.viewer).get("/api/v1/tasks/").json()["results"]] == [
        created["id"]
    ]
    assert client_for(tree.outsider).get("/api/v1/tasks/").json()["results"] == []


def test_rights_inherit_and_revocation_takes_effect_at_once(tree):
    outsider = client_for(tree.outsider)
    assign_perm("operate_node", tree.outsider, tree.node["corp/search/frontend"])
    assert _create(outsider, nodes=["corp/search/frontend/bj"]).status_code == 201
    remove_perm("operate_node", tree.outsider, tree.node["corp/search/frontend"])
    assert _create(outsider, nodes=["corp/search/frontend/bj"]).status_code == 400  # unseen


def test_moving_a_node_or_host_moves_its_rights(tree, admin):
    bj = tree.node["corp/search/frontend/bj"]
    node_move(actor=admin, node=bj, parent=tree.node["corp/ads"])
    owner, member = client_for(tree.owner), client_for(tree.member)
    assert _create(owner, hosts=["bj-t000"]).status_code == 400  # no longer in the owner's view
    assert _create(member, hosts=["bj-t000"]).status_code == 201  # granted on the node itself
    host = Host.objects.get(hostname="ads-t000")
    host.nodes.set([tree.node["corp/search/frontend/sh"]])
    assert _create(client_for(tree.grouped), hosts=["ads-t000"]).status_code == 201
