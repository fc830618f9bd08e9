"""Template tags of the plugins admin: how many versions wait for review."""

from django import template

from plugins.selectors import versions_pending

register = template.Library()


@register.simple_tag
def versions_waiting() -> int:
    """Plugin versions submitted and not yet approved or rejected."""
    return versions_pending().count()
