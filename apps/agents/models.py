import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from apps.agents.choices import AgentKind, AgentState, AgentStatus, CommandStatus, CommandType, EventKind


class EnrollmentKey(models.Model):
    """A shared secret agents present once, to register; only its hash is kept."""

    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=20, editable=False)
    max_uses = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: unlimited")
    uses = models.PositiveIntegerField(default=0, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_uses__isnull=True) | Q(uses__lte=models.F("max_uses")), name="enrollment_key_uses_within_limit"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=10, choices=AgentKind.choices, default=AgentKind.AGENT)
    status = models.CharField(max_length=10, choices=AgentStatus.choices, default=AgentStatus.ONLINE)
    state = models.CharField(max_length=10, choices=AgentState.choices, default=AgentState.IDLE)
    capabilities = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    version = models.CharField(max_length=50, blank=True)
    host = models.JSONField(default=dict, blank=True, help_text="hostname, os, cpu_count, memory_total_bytes, gpus")
    model = models.CharField(max_length=120, blank=True, help_text="LLM the agent uses, if any")
    provider = models.CharField(max_length=60, blank=True)
    readings = models.JSONField(default=dict, blank=True, help_text="Latest readings sent with a heartbeat")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    enrollment_key = models.ForeignKey(EnrollmentKey, null=True, blank=True, on_delete=models.SET_NULL)
    registered_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_latency_ms = models.FloatField(null=True, blank=True, help_text="Round trip the agent measured last")
    status_changed_at = models.DateTimeField(null=True, blank=True)
    breaker_reset_at = models.DateTimeField(
        null=True, blank=True, help_text="Attempts before this do not count towards the circuit breaker"
    )

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(fields=["status", "last_heartbeat_at"], name="agent_status_seen_idx"),
            models.Index(fields=["last_heartbeat_at"], name="agent_seen_idx"),
        ]
        permissions = [("control_agent", "Can send commands to agents")]

    def __str__(self) -> str:
        return self.name

    @property
    def gpus(self) -> list[dict]:
        return list(self.host.get("gpus") or [])


class AgentEvent(models.Model):
    """History of an agent: registration, each status transition, commands."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    from_status = models.CharField(max_length=10, blank=True)
    to_status = models.CharField(max_length=10, blank=True)
    message = models.CharField(max_length=500, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["agent", "-created_at"], name="agentevent_agent_time_idx")]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.kind} {self.from_status}→{self.to_status}"


class AgentCommand(models.Model):
    """An order for an agent; it rides the next heartbeat response, once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="commands")
    type = models.CharField(max_length=10, choices=CommandType.choices)
    args = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=CommandStatus.choices, default=CommandStatus.PENDING)
    issued_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=1000, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The heartbeat looks for pending commands on every call: keep that lookup tiny.
            models.Index(fields=["agent"], condition=Q(status="pending"), name="agentcommand_pending_idx"),
            models.Index(fields=["agent", "-created_at"], name="agentcommand_agent_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} → {self.agent_id} ({self.status})"
