"""The review page's filter: characters that hide what a body does are shown, never rendered."""

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from plugins.selectors import hidden_char_kind

register = template.Library()


@register.filter
def reveal(text: str) -> SafeString:
    """Escape the text, with each hidden character replaced by a marked `U+XXXX`."""
    parts = [
        f'<mark class="hidden-char">U+{ord(c):04X}</mark>' if hidden_char_kind(c) else escape(c)
        for c in text
    ]
    return mark_safe("".join(parts))  # every part is escaped, or a fixed tag
