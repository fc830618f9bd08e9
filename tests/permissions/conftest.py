"""A small tree with an owner, a member, a group member, a viewer and an outsider."""

from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from permissions.models import Node
from tests.factories import hosts_make


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def tree(db, builtins):
    """corp/search/frontend/{bj,sh} and corp/ads, two hosts under each leaf, and the people."""
    hosts_make("dc1", 2, port=1, node_path="corp/search/frontend/bj", prefix="bj")
    hosts_make("dc1", 2, port=1, node_path="corp/search/frontend/sh", prefix="sh")
    hosts_make("dc2", 2, port=1, node_path="corp/ads", prefix="ads")
    users = get_user_model().objects
    people = SimpleNamespace(
        owner=users.create_user("owner"), member=users.create_user("member"),
        grouped=users.create_user("grouped"), viewer=users.create_user("viewer"),
        outsider=users.create_user("outsider"),
    )
    node = {n.path: n for n in Node.objects.all()}
    assign_perm("admin_node", people.owner, node["corp/search"])
    assign_perm("operate_node", people.owner, node["corp/search"])
    assign_perm("operate_node", people.member, node["corp/search/frontend/bj"])
    op = Group.objects.get(name="OP")
    op.user_set.add(people.grouped)
    assign_perm("operate_node", op, node["corp/search/frontend/sh"])
    assign_perm("view_node", Group.objects.get(name="RD"), node["corp/search"])
    Group.objects.get(name="RD").user_set.add(people.viewer)
    return SimpleNamespace(node=node, **vars(people))
