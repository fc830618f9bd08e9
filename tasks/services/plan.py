"""The plan of a launch: what `task_create` would do with the same request, without creating
anything. It runs the create path's own checks (tasks.services.create, permissions.selectors)
and reports their refusals of rights and quota instead of raising them, so that an operator
sees the whole picture at once."""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, QuerySet

from ccs.errors import InvalidInput, ServiceError
from permissions.models import Host
from permissions.selectors import target_split

from ..control import batch_limits
from .callbacks import callback_url_check
from .create import ControlData, quota_check, version_checked

SAMPLE = 20  # host names listed per refusal; the count is always whole


@dataclass(frozen=True)
class Plan:
    """What a launch would do; `allowed` is whether task_create would accept it now."""

    plugin: str
    version: int
    run_as: str
    timeout: int
    total_hosts: int
    datacenters: dict[str, int]
    batches: list[int]
    not_operable: dict
    unreachable: dict
    quota: dict

    @property
    def allowed(self) -> bool:
        return self.total_hosts > 0 and not self.not_operable["count"] and self.quota["allowed"]


def _sample(hosts: QuerySet[Host]) -> dict:
    return {"count": hosts.count(),
            "hosts": list(hosts.order_by("hostname").values_list("hostname", flat=True)[:SAMPLE])}


def _quota(actor: AbstractBaseUser, hosts: int) -> dict:
    """The quota's answer to this launch: the first limit it would meet, or allowed."""
    try:
        quota_check(actor)
        quota_check(actor, hosts)
    except ServiceError as exc:
        return {"allowed": False, "detail": exc.detail}
    return {"allowed": True, "detail": ""}


def _batch_sizes(batches: list, total: int) -> list[int]:
    """The size of each batch as the controller will release them (pause points between)."""
    limits = batch_limits(batches, total)
    return [limit - before for before, limit in zip([0, *limits], limits, strict=False)]


def task_plan(
    *,
    actor: AbstractBaseUser,
    plugin: str,
    version: int | None,
    params: dict,
    nodes: list[str],
    hosts: list[str],
    run_as: str,
    control: ControlData,
    callback_url: str = "",
) -> Plan:
    """Check a launch as task_create does and describe it: bad input is still a 400 naming
    the field; hosts not operable and the quota's refusal are reported, not raised."""
    plugin_version, timeout = version_checked(plugin, version, params, run_as, control)
    if callback_url:
        callback_url_check(callback_url)
    target, refused = target_split(actor, node_paths=nodes, hostnames=hosts)
    per_dc = dict(target.order_by("datacenter__name").values_list("datacenter__name")
                  .annotate(n=Count("id")))
    total = sum(per_dc.values())
    if not total:
        raise InvalidInput.field("target", "the target matches no host")
    return Plan(
        plugin=plugin_version.plugin.name, version=plugin_version.number, run_as=run_as,
        timeout=timeout, total_hosts=total, datacenters=per_dc,
        batches=_batch_sizes(control.batches, total), not_operable=_sample(refused),
        unreachable=_sample(target.filter(status=Host.Status.OFFLINE)),
        quota=_quota(actor, total),
    )
