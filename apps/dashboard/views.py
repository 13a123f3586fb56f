"""Dashboard pages. One URL serves the full page or, for htmx, just its partial."""

from urllib.parse import urlencode

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
from apps.dashboard import charts, telemetry
from apps.dashboard.render import agent_context, gpu_page_context
from apps.metrics import selectors as metrics
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
        "agents": telemetry.agents_with_telemetry(selectors.agents_with_health(page.object_list)),
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


AGENT_TABS = [("overview", "Overview"), ("system", "System"), ("gpu", "GPU"), ("llm", "AI / LLM")]


def _partial_for(request, target: str) -> bool:
    """htmx asked for one region of the page (not a history restore, which wants it all)."""
    return bool(request.htmx and request.htmx.target == target and not request.htmx.history_restore_request)


@login_required
def agent_detail(request, agent_id):
    _require(request, Role.VIEWER)
    agent = selectors.agent_get(agent_id=agent_id)
    if agent is None:
        raise Http404("No such agent")
    tab = request.GET.get("tab", "overview")
    if tab not in dict(AGENT_TABS):
        tab = "overview"
    time_range = charts.range_get(request.GET.get("range"), allowed=charts.AGENT_RANGES, default="1h")
    window = charts.window_for(time_range)
    context = {
        **agent_context(agent, gpu_rows=tab == "gpu"),
        "tab": tab,
        "tabs": AGENT_TABS,
        "range": time_range,
        "ranges": [charts.RANGES[k] for k in charts.AGENT_RANGES],
        "charts": charts.agent_charts(tab, agent_id=agent.pk, window=window),
    }
    if tab == "llm":
        context["usage"] = metrics.llm_usage(start=window.start, end=window.end, group_by="model", agent_ids=[agent.pk])
    if _partial_for(request, "agent-tab"):
        return render(request, "dashboard/partials/agent_tab.html", context)
    return render(request, "dashboard/agent_detail.html", context)


@login_required
def gpus(request):
    _require(request, Role.VIEWER)
    q = request.GET.get("q", "").strip()[:100]
    time_range = charts.range_get(request.GET.get("range"), allowed=charts.GPU_RANGES, default="1h")
    context = {
        **gpu_page_context(q=q),
        "q": q,
        "range": time_range,
        "ranges": [charts.RANGES[k] for k in charts.GPU_RANGES],
        "charts": charts.fleet_gpu_charts(window=charts.window_for(time_range)),
        "range_extra": urlencode({"q": q}) if q else "",
        "hot_c": telemetry.HOT_C,
    }
    if _partial_for(request, "gpu-table"):
        return render(request, "dashboard/partials/gpu_table.html", context)
    return render(request, "dashboard/gpus.html", context)


@login_required
def llm_usage(request):
    _require(request, Role.VIEWER)
    time_range = charts.range_get(request.GET.get("range"), allowed=charts.LLM_RANGES, default="24h")
    window = charts.window_for(time_range, whole_hours=True)
    context = {
        "usage": telemetry.llm_usage_page(window=window),
        "window": window,
        "range": time_range,
        "ranges": [charts.RANGES[k] for k in charts.LLM_RANGES],
        "charts": charts.llm_charts(window=window),
    }
    # The totals and the tables re-read themselves every minute (the rollups move that often).
    for region in ("llm-summary", "llm-tables"):
        if _partial_for(request, region):
            return render(request, f"dashboard/partials/{region.replace('-', '_')}.html", context)
    return render(request, "dashboard/llm.html", context)


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
