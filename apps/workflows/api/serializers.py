from rest_framework import serializers

from apps.agents.api.serializers import StrictSerializer
from apps.workflows.choices import ErrorType, ResourceClass, TaskState


class ResourcesSerializer(StrictSerializer):
    # "class" is a Python keyword: declared in get_fields.
    vram_mb = serializers.IntegerField(required=False, min_value=1, max_value=4_000_000)

    def get_fields(self):
        fields = super().get_fields()
        fields["class"] = serializers.ChoiceField(choices=ResourceClass.choices, required=False)
        return fields


class TaskCreateSerializer(StrictSerializer):
    kind = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$", max_length=100)
    payload = serializers.DictField(required=False, default=dict)
    required_capabilities = serializers.ListField(child=serializers.CharField(max_length=100), required=False,
                                                  default=list, max_length=50)
    priority = serializers.IntegerField(required=False, default=0, min_value=-1000, max_value=1000)
    resources = ResourcesSerializer(required=False)
    model = serializers.CharField(required=False, default="", allow_blank=True, max_length=128)
    queued_timeout_s = serializers.IntegerField(required=False, min_value=1, max_value=30 * 86400)
    attempt_timeout_s = serializers.IntegerField(required=False, default=300, min_value=5, max_value=86400)
    overall_timeout_s = serializers.IntegerField(required=False, min_value=1, max_value=30 * 86400)
    max_attempts = serializers.IntegerField(required=False, default=3, min_value=1, max_value=50)
    backoff_base_s = serializers.FloatField(required=False, default=2.0, min_value=0, max_value=3600)
    backoff_max_s = serializers.FloatField(required=False, default=300.0, min_value=0, max_value=86400)
    idempotency_key = serializers.CharField(required=False, max_length=200, allow_blank=False)


class AttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    agent = serializers.UUIDField(source="agent_id", allow_null=True)
    agent_name = serializers.CharField(source="agent.name", default=None)
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    outcome = serializers.CharField()
    error_type = serializers.CharField()
    error_message = serializers.CharField()


class TaskSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    state = serializers.ChoiceField(choices=TaskState.choices)
    runner = serializers.CharField()
    priority = serializers.IntegerField()
    payload = serializers.DictField()
    required_capabilities = serializers.ListField(child=serializers.CharField())
    resource_class = serializers.CharField()
    vram_mb = serializers.IntegerField(allow_null=True)
    model = serializers.CharField()
    routing_score = serializers.FloatField(allow_null=True)
    routing_reason = serializers.CharField()
    wait_reason = serializers.CharField()
    agent = serializers.UUIDField(source="agent_id", allow_null=True)
    agent_name = serializers.CharField(source="agent.name", default=None)
    lease_expires_at = serializers.DateTimeField(allow_null=True)
    not_before = serializers.DateTimeField(allow_null=True)
    max_attempts = serializers.IntegerField()
    attempt_timeout_s = serializers.IntegerField()
    queued_timeout_s = serializers.IntegerField(allow_null=True)
    overall_timeout_s = serializers.IntegerField(allow_null=True)
    idempotency_key = serializers.CharField(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    error_type = serializers.CharField()
    error_message = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class TaskDetailSerializer(TaskSerializer):
    attempts = AttemptSerializer(many=True, source="attempt_list")


class ClaimInputSerializer(StrictSerializer):
    limit = serializers.IntegerField(required=False, default=1, min_value=1, max_value=50)
    wait = serializers.FloatField(required=False, default=0, min_value=0, max_value=30,
                                  help_text="Seconds to wait for work when there is none (long poll)")


class ClaimedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    payload = serializers.DictField()
    attempt = serializers.IntegerField()
    lease_expires_at = serializers.DateTimeField()
    attempt_timeout_s = serializers.IntegerField(help_text="Renew well before this many seconds pass")
    resource_class = serializers.CharField()
    vram_mb = serializers.IntegerField(allow_null=True)


class ClaimOutputSerializer(serializers.Serializer):
    tasks = ClaimedSerializer(many=True)


class RenewInputSerializer(StrictSerializer):
    task_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=500)


class RenewOutputSerializer(serializers.Serializer):
    renewed = serializers.ListField(child=serializers.IntegerField())
    lost = serializers.ListField(child=serializers.IntegerField(), help_text="Stop working on these")


class CompleteInputSerializer(StrictSerializer):
    result = serializers.DictField(required=False, default=dict)


class FailInputSerializer(StrictSerializer):
    error_type = serializers.ChoiceField(choices=ErrorType.choices, default=ErrorType.AGENT_ERROR)
    message = serializers.CharField(required=False, default="", allow_blank=True, max_length=4000)
    retryable = serializers.BooleanField(required=False, default=True)


class RetryInputSerializer(StrictSerializer):
    priority_boost = serializers.IntegerField(required=False, default=0, min_value=0, max_value=1000)


class ReassignInputSerializer(StrictSerializer):
    agent = serializers.UUIDField(required=False, allow_null=True, default=None,
                                  help_text="Omit to let PulseGuard pick the least-loaded healthy agent")
