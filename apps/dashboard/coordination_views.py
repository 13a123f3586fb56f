"""The coordination page (success rate, failure patterns, queues and stuck work) and the
emergency controls page. The figures come from apps.workflows.coordination, the actions
from apps.workflows.controls; this module parses, authorizes and renders."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render

from apps.dashboard import work
from apps.dashboard.views import _partial_for, _require
from apps.security.roles import Role, user_has_role
from apps.security.selectors import audit_records_recent
from apps.workflows import controls, coordination

DEFAULT_WINDOW = "24h"
LABELS = {controls.PAUSE: "Pause dispatch", controls.RESUME: "Resume dispatch", controls.STOP_ALL: "Stop all running",
          controls.CLEAR_QUEUE: "Clear the queue", controls.RESTART_AGENTS: "Restart all agents",
          controls.AUTO_HEAL: "Auto-heal"}


def _window(request):
    key = request.GET.get("window", DEFAULT_WINDOW)
    if key not in work.WINDOWS:
        key = DEFAULT_WINDOW
    label, length = work.WINDOWS[key]
    return key, label, coordination.window_make(length=length)


@login_required
def coordination_page(request):
    _require(request, Role.VIEWER)
    key, label, window = _window(request)
    diagnostics = coordination.diagnostics(window=window)
    context = {"window_key": key, "window_label": label, "windows": [(k, v[0]) for k, v in work.WINDOWS.items()],
               "diag": diagnostics}
    # The queue panel re-reads itself every few seconds (hx-trigger="every 5s").
    if _partial_for(request, "coord-queues"):
        return render(request, "dashboard/partials/coord_queues.html", context)
    fleet = coordination.success_rate(window=window)["groups"][0]
    context.update(
        fleet=fleet,
        bars=work.hourly_bars(fleet["hourly"], start=window.start, end=window.end),
        by_agent=coordination.success_rate(window=window, group_by="agent", limit=20),
        by_kind=coordination.success_rate(window=window, group_by="kind", limit=20),
        failures=coordination.failure_patterns(window=window),
    )
    return render(request, "dashboard/coordination.html", context)


# What each control reports, in words ("3 tasks cancelled").
def _said(action: str, result) -> str:
    n, d = result.affected, result.details
    s = "" if n == 1 else "s"
    if action == controls.PAUSE:
        return "Dispatch paused: no task is claimed or dispatched until resumed" if n else "Dispatch was already paused"
    if action == controls.RESUME:
        return "Dispatch resumed" if n else "Dispatch was not paused"
    if action == controls.STOP_ALL:
        return f"{n} running task{s} cancelled"
    if action == controls.CLEAR_QUEUE:
        return f"{n} queued task{s} cancelled"
    if action == controls.RESTART_AGENTS:
        pending = d.get("already_pending", 0)
        return f"{n} restart command{s} issued" + (f" ({pending} already pending)" if pending else "")
    expired = d.get("expired", {})
    return (f"Auto-heal: {n} fix{'es' if n != 1 else ''} — {expired.get('lease_lost', 0)} lost task(s) requeued, "
            f"{expired.get('queued_timeout', 0) + expired.get('deadline', 0)} timed out, "
            f"{d.get('breakers_reset', 0)} breaker(s) reset, {d.get('stale_agents', {}).get('issued', 0)} stale agent(s) "
            "asked to restart")


def _controls_context(request, *, confirm=None, error=None, reason="") -> dict:
    control = controls.fleet_control_get()
    return {
        "control": control,
        # Pause or resume, whichever applies now, then the rest.
        "actions": [(name, LABELS[name], text) for name, text in controls.ACTIONS.items()
                    if name != (controls.RESUME if not control.paused else controls.PAUSE)],
        "confirm": confirm,
        "confirm_label": LABELS.get(confirm, ""),
        "confirm_text": controls.ACTIONS.get(confirm, ""),
        "confirm_error": error,
        "reason": reason,
        "records": audit_records_recent(action_prefix="controls.", limit=20),
        "can_operate": user_has_role(request.user, Role.OPERATOR),
    }


@login_required
def controls_page(request, action=None):
    """GET: the controls, and (with an action) its confirmation step. POST: run it once
    the operator typed the action's name."""
    _require(request, Role.VIEWER)
    if action is not None and action not in controls.ACTIONS:
        raise Http404("No such control")
    if request.method != "POST":
        if action is not None:
            _require(request, Role.OPERATOR)
        return render(request, "dashboard/controls.html", _controls_context(request, confirm=action))
    _require(request, Role.OPERATOR)
    if action is None:
        raise Http404("Which control?")
    typed = request.POST.get("confirm", "").strip()
    reason = request.POST.get("reason", "").strip()
    if typed != action or len(reason) > 500:
        error = (f"Type “{action}” to confirm; nothing was done." if typed != action
                 else "The reason is longer than 500 characters; nothing was done.")
        return render(request, "dashboard/controls.html",
                      _controls_context(request, confirm=action, error=error, reason=reason[:500]), status=400)
    result = controls.control_run(action=action, actor=request.user, reason=reason)
    messages.success(request, _said(action, result))
    return redirect("dashboard:controls")
