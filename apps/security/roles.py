"""Roles: viewer (read), operator (act), admin (keys, users, settings).

Each role is a Django group holding one `security.role_<name>` permission (plus the
model permissions the admin site needs). Higher roles hold the lower roles' permissions
too, so every check is a plain `user.has_perm(...)` and superusers pass all of them.
"""

from enum import IntEnum


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def group_name(self) -> str:
        return self.name.lower()

    @property
    def permission_codename(self) -> str:
        return f"role_{self.name.lower()}"

    @property
    def permission(self) -> str:
        return f"security.{self.permission_codename}"


ROLE_PERMISSIONS = [
    (Role.VIEWER.permission_codename, "Can read fleet state (viewer role)"),
    (Role.OPERATOR.permission_codename, "Can act on the fleet: commands, retries, approvals (operator role)"),
    (Role.ADMIN.permission_codename, "Can manage keys, tokens, users and settings (admin role)"),
]


def user_has_role(user, role: Role) -> bool:
    return bool(user and user.is_authenticated and user.has_perm(role.permission))


def user_role(user) -> Role | None:
    """The highest role a user holds, or None."""
    for role in sorted(Role, reverse=True):
        if user_has_role(user, role):
            return role
    return None


def role_groups_ensure() -> None:
    """Create or repair the three role groups and their permissions (idempotent)."""
    from django.contrib.auth.models import Group, Permission

    role_perms = {
        p.codename: p
        for p in Permission.objects.filter(
            content_type__app_label="security", codename__in=[r.permission_codename for r in Role]
        )
    }
    if len(role_perms) < len(Role):
        return  # the security app's own permissions are not created yet; a later call builds the groups
    ours = Permission.objects.filter(content_type__app_label__in=["agents", "metrics", "security", "workflows"])
    view_perms = list(ours.filter(codename__startswith="view_"))
    for role in Role:
        group, _ = Group.objects.get_or_create(name=role.group_name)
        perms = [role_perms[r.permission_codename] for r in Role if r <= role] + view_perms
        if role is Role.ADMIN:
            perms += list(ours)
        group.permissions.set(perms)
