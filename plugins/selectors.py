"""Reads of plugins and their versions."""

from ccs.errors import InvalidInput

from .models import Plugin, PluginVersion


def plugin_version_runnable(*, plugin: str, version: int | None) -> PluginVersion:
    """The approved version to run: the one asked for, or the newest approved."""
    try:
        found = Plugin.objects.get(name=plugin)
    except Plugin.DoesNotExist:
        raise InvalidInput.field("plugin", f"unknown plugin: {plugin}") from None
    versions = found.versions.select_related("plugin")
    if version is None:
        chosen = versions.filter(status=PluginVersion.Status.APPROVED).order_by("-number").first()
        if chosen is None:
            raise InvalidInput.field("plugin", f"{plugin} has no approved version")
        return chosen
    chosen = versions.filter(number=version).first()
    if chosen is None:
        raise InvalidInput.field("version", f"{plugin} has no version {version}")
    if chosen.status != PluginVersion.Status.APPROVED:
        raise InvalidInput.field("version", f"{plugin} v{version} is {chosen.status}, not approved")
    return chosen
