from rest_framework.permissions import BasePermission

from apps.security.roles import Role, user_has_role


class _RolePermission(BasePermission):
    role: Role
    message = "This needs the {role} role"

    def has_permission(self, request, view):
        if user_has_role(request.user, self.role):
            return True
        self.message = f"This needs the {self.role.group_name} role"
        return False


class IsViewer(_RolePermission):
    role = Role.VIEWER


class IsOperator(_RolePermission):
    role = Role.OPERATOR


class IsAdmin(_RolePermission):
    role = Role.ADMIN
