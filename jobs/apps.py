from django.apps import AppConfig


class JobsConfig(AppConfig):
    """Saved jobs (launches kept to run again), their runs and schedules."""

    name = "jobs"
