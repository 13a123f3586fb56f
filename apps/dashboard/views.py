"""Dashboard pages. One URL serves the full page or, for htmx, just its partial."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.agents import selectors, services
from apps.agents.choices import AgentStatus, CommandType
from apps.core.errors import ApplicationError
from apps.dashboard.render import agent_context
from apps.security.roles import Role, user_has_role

PAGE_SIZE = 100
OPERATOR_COMMANDS = [CommandType.RESTART, CommandType.DRAIN, CommandType.ISOLATE, CommandType.RELEASE]


def _require(request, role: Role) -> None:
    if not user_has_role(request.user, role):
        raise PermissionDenied(f"This page needs the {role.group_name} role")


@login_required
def fleet(request):
    _require(request, Role.VIEWER)
    try:
        agents = selectors.agent_list(filters=request.GET)
        filter_error = None
    except ApplicationError as exc:
        agents, filter_error = selectors.agent_list(), exc.message
    page = Paginator(agents, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "agents": selectors.agents_with_health(page.object_list),
        "counts": selectors.fleet_counts(),
        "statuses": AgentStatus.choices,
        "selected_status": request.GET.getlist("status"),
        "q": request.GET.get("q", ""),
        "filter_error": filter_error,
        "query": request.GET.urlencode(),
        "stale_after": settings.PULSEGUARD_STALE_AFTER,
    }
    if request.htmx and request.htmx.target == "fleet-table":
        return render(request, "dashboard/partials/fleet_table.html", context)
    return render(request, "dashboard/fleet.html", context)


@login_required
def agent_detail(request, agent_id):
    _require(request, Role.VIEWER)
    agent = selectors.agent_get(agent_id=agent_id)
    if agent is None:
        raise Http404("No such agent")
    return render(request, "dashboard/agent_detail.html", agent_context(agent))


@login_required
@require_POST
def agent_command(request, agent_id, command):
    _require(request, Role.OPERATOR)
    if command not in {c.value for c in OPERATOR_COMMANDS}:
        return HttpResponseBadRequest("Unknown command")
    agent = selectors.agent_get(agent_id=agent_id)
    if agent is None:
        raise Http404("No such agent")
    reason = request.POST.get("reason", "")[:500]
    services.agent_command_issue(agent=agent, type=command, args={"reason": reason} if reason else {}, actor=request.user)
    if request.htmx:
        agent = selectors.agent_get(agent_id=agent_id)
        return render(request, "dashboard/partials/agent_live.html", {**agent_context(agent), "oob": True})
    messages.success(request, f"{command.title()} sent to {agent.name}")
    return redirect("dashboard:agent_detail", agent_id=agent_id)
