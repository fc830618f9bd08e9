"""DRF permission classes of the tasks API, one rule each; visibility (404) is the queryset's."""

from rest_framework.permissions import BasePermission

from . import selectors


class CanOperateTask(BasePermission):
    """Pause, resume, stop a task: who can operate all its hosts at the moment of asking."""

    message = "you may not operate every host of this task"

    def has_object_permission(self, request, view, task) -> bool:
        return selectors.task_operable_by(request.user, task)


class CanOperateSubtask(BasePermission):
    """Pause, resume, stop one subtask: who can operate its host at the moment of asking."""

    message = "you may not operate this host"

    def has_object_permission(self, request, view, subtask) -> bool:
        return selectors.subtask_operable_by(request.user, subtask)
