"""Re-running a task on its hosts that failed, timed out or were lost, as a new task."""

import pytest
from django.contrib.auth import get_user_model

from ccs.errors import InvalidInput, NotFound
from permissions.services import node_ensure, right_grant
from tasks.models import SubTask, Task
from tasks.services import task_rerun
from tests.factories import hosts_make, task_made

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(admin, builtins):
    hosts = hosts_make("dc1", 5, port=1)
    return task_made(admin, hosts, ["success", "failed", "timeout", "lost", "stopped"],
                     batches=[1, "100%"], concurrency=2, failure_threshold="2")


def _hosts(task: Task) -> list[str]:
    return sorted(SubTask.objects.filter(task=task).values_list("host__hostname", flat=True))


def test_a_rerun_is_a_new_task_on_the_unsuccessful_hosts_only(admin, task):
    rerun = task_rerun(actor=admin, task_id=task.pk, statuses=["failed", "timeout", "lost"])
    assert rerun.pk != task.pk
    assert _hosts(rerun) == ["dc1-t001", "dc1-t002", "dc1-t003"]
    assert (rerun.plugin_version, rerun.params, rerun.run_as, rerun.timeout) == (
        task.plugin_version, task.params, task.run_as, task.timeout)
    assert (rerun.batches, rerun.concurrency, rerun.failure_threshold) == ([1, "100%"], 2, "2")
    assert _hosts(task_rerun(actor=admin, task_id=task.pk, statuses=["lost"])) == ["dc1-t003"]


@pytest.mark.parametrize("statuses", [[], ["success"], ["failed", "pending"]])
def test_only_failed_timed_out_or_lost_hosts_are_run_again(admin, task, statuses):
    with pytest.raises(InvalidInput) as refused:
        task_rerun(actor=admin, task_id=task.pk, statuses=statuses)
    assert list(refused.value.errors) == ["statuses"]
    assert Task.objects.count() == 1


def test_a_task_without_such_hosts_has_nothing_to_rerun(admin, builtins):
    task = task_made(admin, hosts_make("dc1", 2, port=1), ["success", "success"])
    with pytest.raises(InvalidInput, match="no host of task .* is failed"):
        task_rerun(actor=admin, task_id=task.pk, statuses=["failed"])


def test_a_task_out_of_the_users_view_is_not_found(admin, task):
    outsider = get_user_model().objects.create_user("outsider")
    with pytest.raises(NotFound):
        task_rerun(actor=outsider, task_id=task.pk, statuses=["failed"])


def test_a_viewer_who_may_not_operate_the_hosts_is_refused(admin, task):
    viewer = get_user_model().objects.create_user("viewer")
    right_grant(actor=admin, node=node_ensure(path="corp/test"), principal=viewer,
                permission="view_node")
    with pytest.raises(Exception, match="you may not operate 1 of the target hosts"):
        task_rerun(actor=viewer, task_id=task.pk, statuses=["failed"])
    assert Task.objects.count() == 1
