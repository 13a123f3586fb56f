from django.contrib import admin

from apps.security.models import ApiToken, AuditRecord, FleetControl
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


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    """Read-only: an audit trail that can be edited is not one."""

    list_display = ("created_at", "actor_name", "action", "target", "affected")
    list_filter = ("action",)
    search_fields = ("actor_name", "action", "target")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AuditRecord._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(FleetControl)
class FleetControlAdmin(admin.ModelAdmin):
    """The dispatch switch, shown read-only; flipping it goes through the audited controls."""

    list_display = ("__str__", "reason", "changed_by", "changed_at")
    readonly_fields = ("paused", "reason", "changed_by", "changed_at")
    actions = ["pause", "resume"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _run(self, request, action: str):
        from apps.security.roles import Role, user_has_role
        from apps.workflows.controls import control_run

        if not user_has_role(request.user, Role.OPERATOR):
            self.message_user(request, "This needs the operator role.", level="error")
            return
        result = control_run(action=action, actor=request.user, reason="from the admin")
        self.message_user(request, f"{action}: {result.affected} changed (audit record {result.audit_id}).")

    @admin.action(description="Pause dispatch (maintenance mode)")
    def pause(self, request, queryset):
        self._run(request, "pause")

    @admin.action(description="Resume dispatch")
    def resume(self, request, queryset):
        self._run(request, "resume")
