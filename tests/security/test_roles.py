import pytest
from django.contrib.auth.models import Group

from apps.security.roles import Role, role_groups_ensure, user_has_role, user_role
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def test_the_three_role_groups_exist_after_migrate():
    assert set(Group.objects.values_list("name", flat=True)) >= {"viewer", "operator", "admin"}


@pytest.mark.parametrize(
    "role, can_view, can_operate, can_admin",
    [
        (Role.VIEWER, True, False, False),
        (Role.OPERATOR, True, True, False),
        (Role.ADMIN, True, True, True),
        (None, False, False, False),
    ],
)
def test_roles_are_cumulative(role, can_view, can_operate, can_admin):
    user = make_user(f"u-{role}", role)
    assert user_has_role(user, Role.VIEWER) is can_view
    assert user_has_role(user, Role.OPERATOR) is can_operate
    assert user_has_role(user, Role.ADMIN) is can_admin
    assert user_role(user) == role


def test_superusers_hold_every_role(django_user_model):
    root = django_user_model.objects.create_superuser("root", password="x")
    assert user_role(root) == Role.ADMIN


def test_ensuring_roles_twice_changes_nothing():
    before = {g.name: set(g.permissions.values_list("codename", flat=True)) for g in Group.objects.all()}
    role_groups_ensure()
    after = {g.name: set(g.permissions.values_list("codename", flat=True)) for g in Group.objects.all()}
    assert before == after
    assert "control_agent" in after["admin"] and "control_agent" not in after["operator"]


def test_an_inactive_user_has_no_role():
    user = make_user("gone", Role.ADMIN)
    user.is_active = False
    user.save()
    assert user_role(user) is None


def test_admins_revoke_keys_and_tokens_from_the_admin(client, enrollment_key, viewer):
    from apps.agents.models import EnrollmentKey
    from apps.security.models import ApiToken
    from apps.security.services import api_token_create

    api_token_create(username=viewer.username)
    admin = make_user("root-admin", Role.ADMIN)
    admin.is_staff = True
    admin.save()
    client.force_login(admin)

    keys = client.post("/admin/agents/enrollmentkey/", {"action": "revoke", "_selected_action": list(EnrollmentKey.objects.values_list("pk", flat=True))})
    tokens = client.post("/admin/security/apitoken/", {"action": "revoke", "_selected_action": list(ApiToken.objects.values_list("pk", flat=True))})

    assert keys.status_code == tokens.status_code == 302
    assert not EnrollmentKey.objects.filter(revoked_at__isnull=True).exists()
    assert not ApiToken.objects.filter(revoked_at__isnull=True).exists()
