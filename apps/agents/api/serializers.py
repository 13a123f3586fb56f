from rest_framework import serializers

from apps.agents.choices import AgentKind, AgentState, CommandType

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,119}$"


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error: a typo in an agent must not be silently ignored."""

    def to_internal_value(self, data):
        unknown = {}
        if isinstance(data, dict):
            unknown = {name: ["Unknown field."] for name in sorted(set(data) - set(self.fields))}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            # Report every problem at once: the unknown fields and the bad known ones.
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from exc
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class GpuInventorySerializer(StrictSerializer):
    index = serializers.IntegerField(min_value=0, max_value=255)
    uuid = serializers.CharField(max_length=80, required=False, allow_blank=True, default="")
    name = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    memory_total_bytes = serializers.IntegerField(min_value=0, required=False, allow_null=True, default=None)


class HostSerializer(StrictSerializer):
    hostname = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    os = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    cpu_count = serializers.IntegerField(min_value=0, max_value=100_000, required=False, allow_null=True, default=None)
    memory_total_bytes = serializers.IntegerField(min_value=0, required=False, allow_null=True, default=None)
    gpus = GpuInventorySerializer(many=True, required=False, default=list, max_length=64)


class LabelsField(serializers.DictField):
    child = serializers.CharField(max_length=200, allow_blank=True)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if len(value) > 50:
            raise serializers.ValidationError("At most 50 labels.")
        if any(len(key) > 100 or not key for key in value):
            raise serializers.ValidationError("Label names must be 1–100 characters.")
        return value


class RegisterInputSerializer(StrictSerializer):
    name = serializers.RegexField(_NAME_RE, max_length=120, error_messages={"invalid": "Use letters, digits and . _ : @ - (max 120)."})
    kind = serializers.ChoiceField(choices=AgentKind.choices, default=AgentKind.AGENT)
    capabilities = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list, max_length=100
    )
    labels = LabelsField(required=False, default=dict)
    version = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    host = HostSerializer(required=False, default=dict)
    model = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    provider = serializers.CharField(max_length=60, required=False, allow_blank=True, default="")
    replace = serializers.BooleanField(required=False, default=False)


class RegisterOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    token = serializers.CharField(help_text="Shown once. Send it as `Authorization: Bearer …`.")
    heartbeat_interval_s = serializers.IntegerField()


class GpuReadingSerializer(StrictSerializer):
    index = serializers.IntegerField(min_value=0, max_value=255)
    utilization_percent = serializers.FloatField(min_value=0, max_value=100, required=False, allow_null=True)
    memory_used_bytes = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    memory_total_bytes = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    temperature_c = serializers.FloatField(min_value=-50, max_value=200, required=False, allow_null=True)
    power_w = serializers.FloatField(min_value=0, max_value=10_000, required=False, allow_null=True)


class ReadingsSerializer(StrictSerializer):
    cpu_percent = serializers.FloatField(min_value=0, max_value=100, required=False, allow_null=True)
    load1 = serializers.FloatField(min_value=0, required=False, allow_null=True)
    memory_used_bytes = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    memory_total_bytes = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    gpus = GpuReadingSerializer(many=True, required=False, max_length=64)


class HeartbeatInputSerializer(StrictSerializer):
    state = serializers.ChoiceField(choices=AgentState.choices, default=AgentState.IDLE)
    readings = ReadingsSerializer(required=False)
    latency_ms = serializers.FloatField(min_value=0, max_value=600_000, required=False, allow_null=True)
    task_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=500,
        help_text="Tasks this agent holds: their leases are renewed (see `tasks` in the answer)",
    )


class CommandOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    type = serializers.ChoiceField(choices=CommandType.choices)
    args = serializers.DictField()
    issued_at = serializers.DateTimeField()


class LeasesOutputSerializer(serializers.Serializer):
    renewed = serializers.ListField(child=serializers.IntegerField())
    lost = serializers.ListField(child=serializers.IntegerField(), help_text="Stop working on these")


class HeartbeatOutputSerializer(serializers.Serializer):
    commands = CommandOutputSerializer(many=True)
    heartbeat_interval_s = serializers.IntegerField()
    status = serializers.CharField()
    tasks = LeasesOutputSerializer(required=False, help_text="Present when task_ids were sent")


class CommandAckInputSerializer(StrictSerializer):
    ok = serializers.BooleanField(default=True)
    message = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")


class CommandInputSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class CommandSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    type = serializers.CharField()
    args = serializers.DictField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    acked_at = serializers.DateTimeField(allow_null=True)
    result = serializers.CharField()


class AgentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.CharField()
    state = serializers.CharField()
    health_score = serializers.IntegerField()
    last_heartbeat_at = serializers.DateTimeField(allow_null=True)
    status_changed_at = serializers.DateTimeField(allow_null=True)
    registered_at = serializers.DateTimeField()
    host = serializers.DictField()
    model = serializers.CharField()
    provider = serializers.CharField()
    version = serializers.CharField()
    labels = serializers.DictField()
    capabilities = serializers.ListField(child=serializers.CharField())
    readings = serializers.DictField()
    last_latency_ms = serializers.FloatField(allow_null=True)


class AgentEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    from_status = serializers.CharField()
    to_status = serializers.CharField()
    message = serializers.CharField()
    actor = serializers.CharField(source="actor.username", default=None)
    created_at = serializers.DateTimeField()
