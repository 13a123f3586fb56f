from apps.security.roles import Role, user_role


def roles(request):
    role = user_role(getattr(request, "user", None))
    return {
        "user_role": role.group_name if role else None,
        "can_operate": bool(role and role >= Role.OPERATOR),
        "can_admin": bool(role and role >= Role.ADMIN),
    }
