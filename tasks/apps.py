from django.apps import AppConfig


class TasksConfig(AppConfig):
    """Tasks, subtasks, their state machine, fan-out and broadcast."""

    name = "tasks"
