"""The Celery app: configuration from Django settings, routes from ccs.routing."""

import os

from celery import Celery, signals
from django.conf import settings

from agent.runtime import collector_tune

from . import routing
from .env import settings_or_exit
from .routing import QUEUE_CALLBACKS, QUEUE_CONTROL, route_task

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccs.settings")
settings_or_exit()

app = Celery("ccs")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_routes = (route_task,)
app.conf.task_default_queue = QUEUE_CONTROL
app.conf.task_create_missing_queues = True
app.autodiscover_tasks(["tasks"])

# Periodic jobs, run by `celery beat` (Procfile: beat).
app.conf.beat_schedule = {
    "hosts-probe": {"task": routing.TASK_PROBE_PLAN,
                    "schedule": float(settings.CCS_PROBE_INTERVAL)},
}



@signals.worker_ready.connect
def _tune(**_: object) -> None:
    """Every worker, once it has started (its start-up objects stay out of collections)."""
    collector_tune()


__all__ = ["app", "QUEUE_CALLBACKS"]
