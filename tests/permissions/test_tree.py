"""The service tree: paths stay right on rename and move; bad moves and deletes are refused."""

import pytest

from ccs.errors import Conflict, Forbidden, InvalidInput
from permissions.models import Node
from permissions.services import node_create, node_delete, node_move, node_rename

from .conftest import client_for

pytestmark = pytest.mark.django_db


def _paths() -> list[str]:
    return sorted(Node.objects.values_list("path", flat=True))


def test_rename_rewrites_every_descendant_path(tree, admin):
    node_rename(actor=admin, node=tree.node["corp/search"], name="find")
    assert _paths() == ["corp", "corp/ads", "corp/find", "corp/find/frontend",
                        "corp/find/frontend/bj", "corp/find/frontend/sh"]


def test_move_rewrites_paths_and_parent(tree, admin):
    moved = node_move(actor=admin, node=tree.node["corp/search/frontend"],
                      parent=tree.node["corp/ads"])
    assert moved.path == "corp/ads/frontend"
    assert moved.parent == tree.node["corp/ads"]
    assert "corp/ads/frontend/bj" in _paths()
    assert not Node.objects.filter(path__startswith="corp/search/").exists()


def test_moving_under_own_descendant_is_refused(tree, admin):
    before = _paths()
    with pytest.raises(InvalidInput):
        node_move(actor=admin, node=tree.node["corp/search"],
                  parent=tree.node["corp/search/frontend/bj"])
    with pytest.raises(InvalidInput):
        node_move(actor=admin, node=tree.node["corp/search"], parent=tree.node["corp/search"])
    assert _paths() == before


def test_delete_refuses_nodes_with_children_or_hosts(tree, admin):
    with pytest.raises(Conflict, match="child"):
        node_delete(actor=admin, node=tree.node["corp/search"])
    with pytest.raises(Conflict, match="hosts"):
        node_delete(actor=admin, node=tree.node["corp/ads"])
    empty = node_create(actor=admin, parent=tree.node["corp/ads"], name="empty")
    node_delete(actor=admin, node=empty)
    assert not Node.objects.filter(path="corp/ads/empty").exists()


@pytest.mark.parametrize("name", ["", " x", "a/b", "x" * 101, "..hidden", "sp ace"])
def test_malformed_names_are_refused(tree, admin, name):
    before = _paths()
    with pytest.raises(InvalidInput):
        node_create(actor=admin, parent=tree.node["corp"], name=name)
    with pytest.raises(InvalidInput):
        node_rename(actor=admin, node=tree.node["corp/ads"], name=name)
    assert _paths() == before


def test_sibling_names_are_unique(tree, admin):
    with pytest.raises(Conflict):
        node_create(actor=admin, parent=tree.node["corp"], name="ads")
    with pytest.raises(Conflict):
        node_rename(actor=admin, node=tree.node["corp/search/frontend/sh"], name="bj")


def test_only_node_admins_change_the_tree(tree):
    with pytest.raises(Forbidden):
        node_create(actor=tree.member, parent=tree.node["corp/search/frontend/bj"], name="x")
    with pytest.raises(Forbidden):
        node_move(actor=tree.owner, node=tree.node["corp/search/frontend"],
                  parent=tree.node["corp/ads"])  # no admin on the target
    created = node_create(actor=tree.owner, parent=tree.node["corp/search"], name="backend")
    assert created.path == "corp/search/backend"


def test_tree_api_create_rename_move_delete(tree):
    owner = client_for(tree.owner)
    search = tree.node["corp/search"]
    made = owner.post("/api/v1/nodes/", {"name": "api", "parent": search.pk}, format="json")
    assert made.status_code == 201, made.content
    node_id = made.json()["id"]
    renamed = owner.patch(f"/api/v1/nodes/{node_id}/", {"name": "rpc"}, format="json")
    assert renamed.json()["path"] == "corp/search/rpc"
    moved = owner.patch(f"/api/v1/nodes/{node_id}/",
                        {"parent": tree.node["corp/search/frontend"].pk}, format="json")
    assert moved.json()["path"] == "corp/search/frontend/rpc"
    bad = owner.patch(f"/api/v1/nodes/{node_id}/", {"name": "a/b"}, format="json")
    assert bad.status_code == 400 and "name" in bad.json()["errors"]
    assert owner.delete(f"/api/v1/nodes/{node_id}/").status_code == 204
    assert client_for(tree.member).delete(
        f"/api/v1/nodes/{tree.node['corp/search/frontend/bj'].pk}/").status_code == 403
    assert client_for(tree.outsider).post(
        "/api/v1/nodes/", {"name": "x", "parent": search.pk}, format="json").status_code == 404
    assert owner.post("/api/v1/nodes/", {"name": "root2"}, format="json").status_code == 403
