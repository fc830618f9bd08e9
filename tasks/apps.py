from django.apps import AppConfig


class TasksConfig(AppConfig):
    """Tasks, subtasks, their state machine, fan-out and broadcast."""

    name = "tasks"

    def ready(self) -> None:
        # Bind the shared tasks to the CCS Celery app in every process that runs Django.
        import ccs.celery  # noqa: F401
