"""The audit log: written by services, read-only in the admin; the dispatch switch's admin
goes through the audited controls."""

import pytest

from apps.security.models import AuditRecord, FleetControl
from apps.security.roles import Role
from apps.security.selectors import audit_records_recent
from apps.security.services import audit_record
from apps.workflows import controls
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_pause_cache():
    controls.dispatch_paused_forget()
    yield
    controls.dispatch_paused_forget()


def test_a_record_says_who_what_and_how_many(operator):
    record = audit_record(actor=operator, action="controls.stop-all", target="all running tasks", affected=7,
                          details={"by_kind": {"x": 7}})
    assert (record.actor, record.actor_name, record.affected, record.details) == (
        operator, "oscar-operator", 7, {"by_kind": {"x": 7}})
    system = audit_record(actor=None, action="controls.auto-heal", target="t" * 400)
    assert (system.actor, system.actor_name, len(system.target), system.affected) == (None, "system", 300, 0)
    assert [r.pk for r in audit_records_recent(action_prefix="controls.")] == [system.pk, record.pk]
    assert audit_records_recent(action_prefix="tokens.") == []


def test_a_record_keeps_the_name_after_the_user_is_gone(operator):
    record = audit_record(actor=operator, action="controls.pause")
    operator.delete()
    record.refresh_from_db()
    assert (record.actor, record.actor_name) == (None, "oscar-operator")


def _staff(role):
    user = make_user(f"staff-{role.group_name}", role)
    user.is_staff = True
    user.save()
    return user


def test_the_audit_log_is_read_only_in_the_admin(client, operator):
    record = audit_record(actor=operator, action="controls.clear-queue", affected=3)
    client.force_login(_staff(Role.ADMIN))
    r = client.get("/admin/security/auditrecord/")
    assert r.status_code == 200 and b"controls.clear-queue" in r.content
    assert client.get("/admin/security/auditrecord/add/").status_code == 403
    assert client.post(f"/admin/security/auditrecord/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post(f"/admin/security/auditrecord/{record.pk}/change/", {"affected": 0})
    record.refresh_from_db()
    assert record.affected == 3


def test_pausing_from_the_admin_is_audited_and_needs_an_operator(client):
    client.force_login(_staff(Role.ADMIN))
    r = client.post("/admin/security/fleetcontrol/", {"action": "pause", "_selected_action": ["1"]}, follow=True)
    assert r.status_code == 200
    assert FleetControl.objects.get().paused is True
    record = AuditRecord.objects.get()
    assert (record.action, record.actor_name, record.affected, record.details["reason"]) == (
        "controls.pause", "staff-admin", 1, "from the admin")

    client.force_login(_staff(Role.VIEWER))
    client.post("/admin/security/fleetcontrol/", {"action": "resume", "_selected_action": ["1"]}, follow=True)
    assert FleetControl.objects.get().paused is True
    assert AuditRecord.objects.count() == 1
