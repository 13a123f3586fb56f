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
