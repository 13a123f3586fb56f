from django.contrib import admin

from apps.agents import services
from apps.agents.models import Agent, AgentCommand, AgentEvent, EnrollmentKey


@admin.register(EnrollmentKey)
class EnrollmentKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "hint", "uses", "max_uses", "expires_at", "revoked_at", "created_at")
    list_filter = ("revoked_at",)
    search_fields = ("name",)
    readonly_fields = ("hint", "uses", "created_at", "created_by")
    actions = ["revoke"]

    def has_add_permission(self, request):
        # The raw key can only be shown once, by `manage.py create_enrollment_key`.
        return False

    @admin.action(description="Revoke selected enrollment keys", permissions=["change"])
    def revoke(self, request, queryset):
        changed = services.enrollment_keys_revoke(keys=list(queryset))
        self.message_user(request, f"Revoked {changed} key(s); agents already registered keep their own tokens.")


class AgentEventInline(admin.TabularInline):
    model = AgentEvent
    extra = 0
    can_delete = False
    readonly_fields = ("created_at", "kind", "from_status", "to_status", "message", "actor")
    ordering = ("-created_at",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "status", "state", "last_heartbeat_at", "model", "version")
    list_filter = ("status", "kind", "state")
    search_fields = ("name", "model", "host__hostname")
    readonly_fields = ("id", "registered_at", "last_heartbeat_at", "status_changed_at", "last_latency_ms", "readings", "enrollment_key")
    exclude = ("token_hash",)
    inlines = [AgentEventInline]


@admin.register(AgentCommand)
class AgentCommandAdmin(admin.ModelAdmin):
    list_display = ("type", "agent", "status", "issued_by", "created_at", "delivered_at", "acked_at")
    list_filter = ("status", "type")
    list_select_related = ("agent", "issued_by")
    readonly_fields = ("created_at", "delivered_at", "acked_at")


@admin.register(AgentEvent)
class AgentEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "agent", "kind", "from_status", "to_status", "message")
    list_filter = ("kind", "to_status")
    list_select_related = ("agent",)
    date_hierarchy = "created_at"
