from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_roles(sender, **kwargs):
    from apps.security.roles import role_groups_ensure

    role_groups_ensure()


class SecurityConfig(AppConfig):
    name = "apps.security"
    label = "security"

    def ready(self):
        # Permissions only exist after each app's post_migrate, so the groups are (re)built
        # after every app's: the last call sees every app's permissions. It is idempotent.
        post_migrate.connect(_ensure_roles, dispatch_uid="security-ensure-roles")
