from django.contrib import admin

from apps.security.models import ApiToken
from apps.security.services import api_tokens_revoke


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "hint", "created_at", "last_used_at", "expires_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "user__username")
    readonly_fields = ("hint", "created_at", "last_used_at")
    actions = ["revoke"]

    def has_add_permission(self, request):
        # The raw token can only be shown once, by `manage.py create_api_token`.
        return False

    @admin.action(description="Revoke selected API tokens", permissions=["change"])
    def revoke(self, request, queryset):
        changed = api_tokens_revoke(tokens=list(queryset))
        self.message_user(request, f"Revoked {changed} token(s).")
