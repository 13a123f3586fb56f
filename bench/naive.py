"""The baseline for bench/heartbeat.py: the heartbeat written the textbook DRF + ORM way.

Same JSON in, same JSON out, same writes as the product's heartbeat (the fast path in
apps/agents/api/fast.py, or `AgentHeartbeatApi`, both through
`services.agent_heartbeats_record`), but the way a first version usually looks:

- look the agent up by its token hash through the ORM and compare it to the URL id;
- validate the body with a ModelSerializer (readings checked by the same nested
  ReadingsSerializer the real endpoint uses);
- `serializer.save()` → `agent.save()` (every column), flipping late/stale/offline back
  to online and writing an AgentEvent on that transition;
- read the pending commands with the ORM and mark each delivered with its own `save()`;
- serialize the commands with a ModelSerializer.

The whole request is one transaction (`transaction.atomic`); the product's heartbeat
is committed in one transaction too, shared with the other heartbeats of its batch. It is
only mounted by bench/urls.py; nothing in the product imports it.
"""

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents import events
from apps.agents.api.serializers import ReadingsSerializer
from apps.agents.choices import AgentStatus, CommandStatus, EventKind
from apps.agents.models import Agent, AgentCommand, AgentEvent
from apps.core.tokens import bearer_from_header, token_hash

REVIVABLE = {AgentStatus.LATE, AgentStatus.STALE, AgentStatus.OFFLINE}


class NaiveHeartbeatSerializer(serializers.ModelSerializer):
    readings = serializers.JSONField(required=False)
    latency_ms = serializers.FloatField(
        source="last_latency_ms", min_value=0, max_value=600_000, required=False, allow_null=True
    )

    class Meta:
        model = Agent
        fields = ["state", "readings", "latency_ms"]

    def validate_readings(self, value):
        readings = ReadingsSerializer(data=value)
        readings.is_valid(raise_exception=True)
        return readings.validated_data


class NaiveCommandSerializer(serializers.ModelSerializer):
    issued_at = serializers.DateTimeField(source="created_at")

    class Meta:
        model = AgentCommand
        fields = ["id", "type", "args", "issued_at"]


class NaiveHeartbeatApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @transaction.atomic
    def post(self, request, agent_id):
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is None:
            raise NotAuthenticated("Send the token as 'Authorization: Bearer <token>'")
        try:
            agent = Agent.objects.get(token_hash=token_hash(raw))
        except Agent.DoesNotExist:
            raise AuthenticationFailed("Unknown or replaced agent token") from None
        if agent.pk != agent_id:
            raise PermissionDenied("This token belongs to another agent")

        serializer = NaiveHeartbeatSerializer(agent, data=request.data)
        serializer.is_valid(raise_exception=True)
        now = timezone.now()
        old_status, old_state = agent.status, agent.state
        extra = {"last_heartbeat_at": now}
        if old_status in REVIVABLE:
            extra.update(status=AgentStatus.ONLINE, status_changed_at=now)
        agent = serializer.save(**extra)
        if agent.status != old_status:
            AgentEvent.objects.create(
                agent=agent, kind=EventKind.STATUS_CHANGED, from_status=old_status, to_status=agent.status,
                message="Heartbeat received", created_at=now,
            )

        commands = list(AgentCommand.objects.filter(agent=agent, status=CommandStatus.PENDING).order_by("created_at"))
        for command in commands:
            command.status = CommandStatus.DELIVERED
            command.delivered_at = now
            command.save()

        if agent.status != old_status or agent.state != old_state or commands:
            events.agents_changed([agent.pk])
        return Response(
            {
                "commands": NaiveCommandSerializer(commands, many=True).data,
                "heartbeat_interval_s": settings.PULSEGUARD_HEARTBEAT_INTERVAL,
                "status": agent.status,
            }
        )
