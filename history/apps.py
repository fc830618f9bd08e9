from django.apps import AppConfig


class HistoryConfig(AppConfig):
    """History retention: old tasks, subtasks and events purged in small batches."""

    name = "history"
