from django.conf import settings
from django.db import models

from apps.security.roles import ROLE_PERMISSIONS


class ApiToken(models.Model):
    """A bearer token for scripts and tools, acting as its user with that user's role."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=20, editable=False, help_text="First characters, to recognise it")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = ROLE_PERMISSIONS

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"


class AuditRecord(models.Model):
    """Who did what to the fleet, when, and how much it touched. Written by services, never edited."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="audit_records")
    # Kept beside the foreign key: the record must still say who it was after the user is deleted.
    actor_name = models.CharField(max_length=150, help_text="Username at the time, or 'system'")
    action = models.CharField(max_length=64, help_text="e.g. controls.pause, controls.stop-all")
    target = models.CharField(max_length=300, blank=True, help_text="What the action was aimed at, in words")
    affected = models.PositiveIntegerField(default=0, help_text="How many things it changed (0: nothing to do)")
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["action", "-created_at"], name="audit_action_time_idx")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} ({self.affected})"


class FleetControl(models.Model):
    """The fleet's emergency switch: one row (id 1). While `paused`, no task is dispatched.

    It lives beside the audit log because every flip of it is an audited operator action;
    apps.workflows.controls is the only writer and the reader (`dispatch_paused()`).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    paused = models.BooleanField(default=False, help_text="Maintenance mode: no claims, no Celery dispatch")
    reason = models.CharField(max_length=500, blank=True)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="fleetcontrol_singleton")]

    def __str__(self) -> str:
        return "dispatch paused" if self.paused else "dispatch running"
