from django.contrib import admin

from apps.workflows.models import Task, TaskAttempt


class TaskAttemptInline(admin.TabularInline):
    model = TaskAttempt
    extra = 0
    can_delete = False
    readonly_fields = ("number", "agent", "started_at", "ended_at", "outcome", "error_type", "error_message")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "state", "runner", "resource_class", "priority", "agent", "created_at", "finished_at")
    list_filter = ("state", "runner", "resource_class")
    search_fields = ("kind", "idempotency_key")
    list_select_related = ("agent",)
    inlines = [TaskAttemptInline]
    # State changes go through the API and dashboard (services), never a raw edit.
    readonly_fields = [f.name for f in Task._meta.fields]

    def has_add_permission(self, request):
        return False
