from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.permissions import BasePermission

from apps.core.errors import AuthenticationFailed
from apps.core.tokens import AGENT_PREFIX, bearer_from_header


class AgentPrincipal:
    """request.user for agent-token requests: authenticated, but holds no operator role."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    username = ""

    def __init__(self, agent):
        self.agent = agent
        self.username = f"agent:{agent.name}"

    def has_perm(self, perm, obj=None) -> bool:
        return False


class AgentTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer pga_…`: the token an agent got when it registered."""

    def authenticate(self, request):
        from apps.agents.services import agent_authenticate

        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is None or not raw.startswith(AGENT_PREFIX):
            return None
        try:
            agent = agent_authenticate(raw_token=raw)
        except AuthenticationFailed as exc:
            raise exceptions.AuthenticationFailed(exc.message, code=exc.code) from exc
        return AgentPrincipal(agent), agent

    def authenticate_header(self, request):
        return 'Bearer realm="pulseguard-agent"'


class IsThisAgent(BasePermission):
    """An agent token touches only its own agent (the `agent_id` in the URL)."""

    message = "This token belongs to another agent"

    def has_permission(self, request, view):
        principal = request.user
        if not isinstance(principal, AgentPrincipal):
            self.message = "This endpoint needs an agent token"
            return False
        return str(principal.agent.pk) == str(view.kwargs.get("agent_id"))


class AgentTokenScheme(OpenApiAuthenticationExtension):
    target_class = AgentTokenAuthentication
    name = "agentToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Agent token (pga_…) from registration"}
