from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from apps.core.errors import AuthenticationFailed, NotFound
from apps.core.tokens import API_PREFIX, token_hash, token_hint, token_make
from apps.security.models import ApiToken, AuditRecord

# last_used_at is for people; writing it on every request would cost a row update each.
_LAST_USED_GRANULARITY = timedelta(minutes=1)


@transaction.atomic
def api_token_create(*, username: str, name: str = "default", expires_in: timedelta | None = None) -> tuple[ApiToken, str]:
    """Mint an operator API token; the raw token is returned once and only its hash is kept."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NotFound(f"No user named {username!r}", code="unknown_user")
    raw = token_make(API_PREFIX)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        key_hash=token_hash(raw),
        hint=token_hint(raw),
        expires_at=timezone.now() + expires_in if expires_in else None,
    )
    return token, raw


def api_token_authenticate(*, raw: str) -> ApiToken:
    token = ApiToken.objects.select_related("user").filter(key_hash=token_hash(raw)).first()
    now = timezone.now()
    if token is None:
        raise AuthenticationFailed("Unknown API token", code="invalid_token")
    if token.revoked_at is not None:
        raise AuthenticationFailed("This API token was revoked", code="token_revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise AuthenticationFailed("This API token has expired", code="token_expired")
    if not token.user.is_active:
        raise AuthenticationFailed("The token's user is inactive", code="user_inactive")
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_GRANULARITY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def api_tokens_revoke(*, tokens) -> int:
    """Revoke tokens (idempotent). Returns how many changed."""
    return ApiToken.objects.filter(pk__in=[t.pk for t in tokens], revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )


def audit_record(*, actor, action: str, target: str = "", affected: int = 0, details: dict | None = None) -> AuditRecord:
    """Write one audit record (who, what, aimed at what, how many affected). `actor` None is the system.

    Called inside the caller's transaction, so an action that rolls back leaves no record.
    """
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditRecord.objects.create(
        actor=user,
        actor_name=user.get_username() if user is not None else "system",
        action=action,
        target=target[:300],
        affected=max(0, int(affected)),
        details=details or {},
        created_at=timezone.now(),
    )

