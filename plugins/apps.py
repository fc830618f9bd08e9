from django.apps import AppConfig


class PluginsConfig(AppConfig):
    """Plugins, versions, review and signing."""

    name = "plugins"
