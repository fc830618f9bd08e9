from django.apps import AppConfig


class PermissionsConfig(AppConfig):
    """Service tree, inventory and rights."""

    name = "permissions"
    verbose_name = "Service tree and inventory"
