from django.apps import AppConfig


class NotifyConfig(AppConfig):
    """Notifications: e-mail and chat webhooks on what a user, a saved job or a task asks for."""

    name = "notify"
