"""DRF permission classes shared by the apps: one rule each."""

from rest_framework.permissions import SAFE_METHODS, BasePermission


class IsSuperuserOrReadOnly(BasePermission):
    """Reads for every authenticated user; writes for superusers only."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or user.is_superuser
