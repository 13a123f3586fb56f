"""Agent API: thin adapters over apps.agents.services / selectors."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents import selectors, services
from apps.agents.api import serializers as s
from apps.agents.authentication import AgentTokenAuthentication, IsThisAgent
from apps.agents.choices import CommandType
from apps.core.errors import NotFound
from apps.core.tokens import bearer_required
from apps.security.permissions import IsOperator, IsViewer

ERRORS = {400: dict, 401: dict, 403: dict, 404: dict}


def _agent_or_404(agent_id):
    agent = selectors.agent_get(agent_id=agent_id)
    if agent is None:
        raise NotFound(f"No agent with id {agent_id}", code="unknown_agent")
    return agent


class AgentRegisterApi(APIView):
    authentication_classes: list = []  # the enrollment key is checked by the service
    permission_classes = [AllowAny]

    @extend_schema(
        request=s.RegisterInputSerializer,
        responses={201: s.RegisterOutputSerializer, 409: dict, **ERRORS},
        auth=[{"enrollmentKey": []}],
        summary="Register an agent with an enrollment key",
    )
    def post(self, request):
        key = bearer_required(request.headers.get("Authorization"))
        data = s.RegisterInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agent, token = services.agent_register(enrollment_key=key, **data.validated_data)
        out = s.RegisterOutputSerializer(
            {"id": agent.pk, "token": token, "heartbeat_interval_s": settings.PULSEGUARD_HEARTBEAT_INTERVAL}
        )
        return Response(out.data, status=status.HTTP_201_CREATED)


class AgentHeartbeatApi(APIView):
    """The heartbeat as a DRF view: it documents the endpoint (OpenAPI) and serves Django's
    test client. Real traffic through pulseguard.asgi is answered by api/fast.py, which
    calls the same service with the same serializer's rules."""

    # The agent token is verified inside the heartbeat statement itself (one round trip).
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=s.HeartbeatInputSerializer,
        responses={200: s.HeartbeatOutputSerializer, **ERRORS},
        auth=[{"agentToken": []}],
        summary="Heartbeat: report state and readings, receive pending commands",
    )
    def post(self, request, agent_id):
        token = bearer_required(request.headers.get("Authorization"))
        data = s.HeartbeatInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.agent_heartbeat_record(agent_id=agent_id, token=token, **data.validated_data)
        return Response(result.as_dict())


class AgentGoodbyeApi(APIView):
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsThisAgent]

    @extend_schema(request=None, responses={204: None, **ERRORS}, summary="Agent shuts down cleanly (offline)")
    def post(self, request, agent_id):
        services.agent_goodbye(agent=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AgentCommandAckApi(APIView):
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsThisAgent]

    @extend_schema(request=s.CommandAckInputSerializer, responses={200: s.CommandSerializer, 409: dict, **ERRORS},
                   summary="Agent acknowledges a command it received")
    def post(self, request, agent_id, command_id):
        data = s.CommandAckInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        command = services.agent_command_ack(agent=request.auth, command_id=command_id, **data.validated_data)
        return Response(s.CommandSerializer(command).data)


class AgentListApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, many=True, enum=["online", "late", "stale", "isolated", "offline"]),
            OpenApiParameter("kind", str, enum=["agent", "worker"]),
            OpenApiParameter("label", str, description="key=value, or key"),
            OpenApiParameter("capability", str),
            OpenApiParameter("q", str, description="search name, hostname, model"),
            OpenApiParameter("limit", int),
            OpenApiParameter("offset", int),
        ],
        responses={200: s.AgentSerializer(many=True), **ERRORS},
        summary="List agents",
    )
    def get(self, request):
        agents = selectors.agent_list(filters=request.query_params)
        paginator = LimitOffsetPagination()
        page = selectors.agents_with_health(paginator.paginate_queryset(agents, request, view=self))
        return paginator.get_paginated_response(s.AgentSerializer(page, many=True).data)


class AgentDetailApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(responses={200: s.AgentSerializer, **ERRORS}, summary="One agent")
    def get(self, request, agent_id):
        agent = selectors.agents_with_health([_agent_or_404(agent_id)])[0]
        return Response(s.AgentSerializer(agent).data)


class AgentEventListApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(responses={200: s.AgentEventSerializer(many=True), **ERRORS}, summary="An agent's history")
    def get(self, request, agent_id):
        _agent_or_404(agent_id)
        events = selectors.agent_event_list(agent_id=agent_id, limit=200)
        return Response(s.AgentEventSerializer(events, many=True).data)


class AgentCommandApi(APIView):
    """POST /agents/{id}/restart | drain | isolate | release (operator role)."""

    permission_classes = [IsOperator]
    command_type: str = ""

    @extend_schema(request=s.CommandInputSerializer, responses={202: s.CommandSerializer, **ERRORS})
    def post(self, request, agent_id):
        data = s.CommandInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        agent = _agent_or_404(agent_id)
        args = {"reason": data.validated_data["reason"]} if data.validated_data["reason"] else {}
        command = services.agent_command_issue(agent=agent, type=self.command_type, args=args, actor=request.user)
        return Response(s.CommandSerializer(command).data, status=status.HTTP_202_ACCEPTED)


def command_view(command_type: str):
    view = type(f"Agent{command_type.title()}Api", (AgentCommandApi,), {"command_type": command_type})
    return extend_schema_view(
        post=extend_schema(summary=f"Ask an agent to {command_type}", operation_id=f"agents_{command_type}")
    )(view)


COMMAND_VIEWS = {ct.value: command_view(ct.value) for ct in CommandType if ct != CommandType.CONFIG}

