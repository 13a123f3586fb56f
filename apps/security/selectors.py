"""Reads of the security app."""

from apps.security.models import AuditRecord


def audit_records_recent(*, action_prefix: str = "", limit: int = 20) -> list[AuditRecord]:
    """The latest audit records, newest first (optionally only actions starting with a prefix)."""
    qs = AuditRecord.objects.select_related("actor").order_by("-created_at", "-id")
    if action_prefix:
        qs = qs.filter(action__startswith=action_prefix)
    return list(qs[:limit])
