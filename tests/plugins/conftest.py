"""People of plugin review (author, reviewer, second reviewer, outsider) and versions made
through the services, in any status."""

from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from plugins import services
from plugins.models import Plugin, PluginVersion
from tests.factories import Fleet, free_port, hosts_make

BODY = "#!/bin/sh\necho hello\n"
FLEET_HOSTS = 3


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def people(db):
    """author owns the `hello` plugin; reviewer and reviewer2 are in `Reviewers`."""
    reviewers = services.reviewers_group_ensure()  # a transactional test's flush drops it
    users = get_user_model().objects
    team = SimpleNamespace(
        author=users.create_user("author", password="pw", is_staff=True),
        reviewer=users.create_user("reviewer", password="pw", is_staff=True),
        reviewer2=users.create_user("reviewer2", password="pw", is_staff=True),
        outsider=users.create_user("outsider", password="pw", is_staff=True),
    )
    reviewers.user_set.add(team.reviewer, team.reviewer2)
    return team


@pytest.fixture
def plugin(people) -> Plugin:
    return services.plugin_create(actor=people.author, name="hello", description="says hello")


def version_make(
    plugin: Plugin, author, status: str = "draft", reviewer=None, **content
) -> PluginVersion:
    """A version of `plugin` written by `author`, walked through the services to `status`."""
    content = {"interpreter": "sh", "body": BODY, "run_as": ["root", "nobody"], **content}
    version = services.plugin_version_create(actor=author, plugin_id=plugin.pk, **content)
    if status == "draft":
        return version
    version = services.plugin_version_submit(actor=author, version_id=version.pk)
    if status == "rejected":
        return services.plugin_version_reject(actor=reviewer, version_id=version.pk,
                                              comment="no")
    if status in ("approved", "retired"):
        version = services.plugin_version_approve(actor=reviewer, version_id=version.pk)
    if status == "retired":
        version = services.plugin_version_retire(actor=reviewer, version_id=version.pk)
    return version


@pytest.fixture
def make_version(people, plugin):
    def make(status: str = "draft", **content) -> PluginVersion:
        return version_make(plugin, people.author, status, people.reviewer, **content)

    return make


@pytest.fixture
def fleet(tmp_path, workers, people):
    """One `ccs-agent fleet` accepting the control plane's current key, serving FLEET_HOSTS
    test hosts of dc1 (under corp/test)."""
    port = free_port()
    running = Fleet(tmp_path, hosts_make("dc1", FLEET_HOSTS, port), port)
    yield running
    running.stop()
