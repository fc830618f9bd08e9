"""Writes of plugins and versions."""

from django.db import transaction
from django.utils import timezone

from .builtin import BUILTINS, body_sha256
from .models import Plugin, PluginVersion
from .signing import sign_meta


def builtin_plugins_install(plugin_model=Plugin, version_model=PluginVersion) -> int:
    """Create each built-in plugin's approved, signed version 1 if missing; returns how many.

    Takes the model classes so the data migration can pass its historical models.
    """
    created = 0
    with transaction.atomic():
        for spec in BUILTINS:
            plugin, _ = plugin_model.objects.get_or_create(
                name=spec["name"], defaults={"description": spec["description"]}
            )
            if version_model.objects.filter(plugin=plugin, number=1).exists():
                continue
            meta = {
                "plugin": spec["name"], "version": 1, "interpreter": spec["interpreter"],
                "sha256": body_sha256(spec["body"]), "run_as": spec["run_as"],
                "timeout": spec["timeout"],
            }
            version_model.objects.create(
                plugin=plugin, number=1, interpreter=spec["interpreter"], body=spec["body"],
                params_schema=spec["params_schema"], run_as=spec["run_as"],
                timeout=spec["timeout"], sha256=meta["sha256"], status="approved",
                signature=sign_meta(meta), review_comment="built-in", reviewed_at=timezone.now(),
            )
            created += 1
    return created
