"""The task pages: the list (live), the "new task" form, one task's detail and the
operator's cancel / retry / reassign. Writes go through apps.workflows.services; each
successful one is published to the "tasks" group so open pages follow."""

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.core.errors import ApplicationError
from apps.dashboard import work
from apps.dashboard.forms import TaskCreateForm
from apps.dashboard.views import _partial_for, _require
from apps.security.roles import Role, user_has_role
from apps.workflows import selectors, services
from apps.workflows.choices import ACTIVE_STATES, Runner, TaskState

PAGE_SIZE = 50
RETRYABLE = (TaskState.FAILED, TaskState.TIMED_OUT, TaskState.CANCELLED)


def _list_context(request, *, form=None) -> dict:
    try:
        filters, filter_error = work.task_filters(request.GET), None
    except ApplicationError as exc:
        filters, filter_error = {}, exc.message
    page = Paginator(selectors.task_list(**filters), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    can_operate = user_has_role(request.user, Role.OPERATOR)
    return {
        "page": page,
        "tasks": work.task_rows(page.object_list),
        "counts": work.task_state_counts(),
        "states": TaskState.choices,
        "runners": Runner.choices,
        "since_choices": [(k, label) for k, (label, _) in work.SINCE.items()],
        "agents": work.agents_for_select(),
        "selected_state": request.GET.getlist("state"),
        "f": {"kind": request.GET.get("kind", ""), "agent": request.GET.get("agent", ""),
              "runner": request.GET.get("runner", ""), "since": request.GET.get("since", "")},
        "filtered": bool(filters),
        "filter_error": filter_error,
        "query": query.urlencode(),
        "form": form if form is not None else (TaskCreateForm() if can_operate else None),
    }


@login_required
def task_list(request):
    _require(request, Role.VIEWER)
    context = _list_context(request)
    if _partial_for(request, "task-table"):
        return render(request, "dashboard/partials/task_table.html", context)
    return render(request, "dashboard/tasks.html", context)


@login_required
@require_POST
def task_create(request):
    _require(request, Role.OPERATOR)
    form = TaskCreateForm(request.POST)
    if form.is_valid():
        try:
            task, created = services.task_create(**form.service_kwargs(), created_by=request.user)
        except ApplicationError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Task #{task.pk} {task.kind} queued" if created else f"Task #{task.pk} already exists")
            return redirect("dashboard:task_detail", task_id=task.pk)
    # Shown again, open, with the errors beside the inputs; nothing was written.
    context = {**_list_context(request, form=form), "form_open": True}
    return render(request, "dashboard/tasks.html", context, status=400)


def _detail_context(request, task) -> dict:
    can_operate = user_has_role(request.user, Role.OPERATOR)
    return {
        "task": task,
        "attempts": selectors.task_attempts(task_id=task.pk),
        "can_cancel": can_operate and task.state not in (TaskState.SUCCEEDED, *RETRYABLE),
        "can_retry": can_operate and task.state in RETRYABLE,
        "can_reassign": can_operate and task.runner == Runner.AGENT and (task.state == TaskState.QUEUED
                                                                          or task.state in ACTIVE_STATES),
        "agents": work.agents_for_select() if can_operate else [],
    }


@login_required
def task_detail(request, task_id):
    _require(request, Role.VIEWER)
    task = selectors.task_get(task_id=task_id)
    if task is None:
        raise Http404("No such task")
    context = _detail_context(request, task)
    if _partial_for(request, "task-live"):
        return render(request, "dashboard/partials/task_live.html", context)
    return render(request, "dashboard/task_detail.html", context)


def _boost(raw: str) -> int:
    try:
        value = int(raw or 0)
    except ValueError:
        raise ApplicationError("The priority boost must be a whole number", code="invalid_input",
                               fields={"priority_boost": ["A whole number."]}) from None
    if not 0 <= value <= 1000:
        raise ApplicationError("The priority boost must be between 0 and 1000", code="invalid_input",
                               fields={"priority_boost": ["0 to 1000."]})
    return value


def _agent_choice(raw: str):
    if raw in ("", "auto"):
        return None  # the service picks the least-loaded healthy agent
    try:
        return str(UUID(raw))
    except ValueError:
        raise ApplicationError("Choose an agent, or let PulseGuard pick one", code="invalid_input",
                               fields={"agent": ["Not an agent id."]}) from None


@login_required
@require_POST
def task_action(request, task_id, action):
    _require(request, Role.OPERATOR)
    task = selectors.task_get(task_id=task_id)
    if task is None:
        raise Http404("No such task")
    who = request.user
    try:
        if action == "cancel":
            services.task_cancel(task_id=task.pk, actor=who)
            done = f"Task #{task.pk} cancelled"
        elif action == "retry":
            boost = _boost(request.POST.get("priority_boost", ""))
            services.task_retry(task_id=task.pk, priority_boost=boost, actor=who)
            done = f"Task #{task.pk} queued again" + (f" with priority +{boost}" if boost else "")
        elif action == "reassign":
            moved = services.task_reassign(task_id=task.pk, agent_id=_agent_choice(request.POST.get("agent", "")),
                                           actor=who)
            done = f"Task #{task.pk} reassigned to {moved.assigned_agent.name}"
        else:
            raise Http404("No such action")
    except ApplicationError as exc:
        # 400 for bad input, 409 when the task's state does not allow it: the page says why.
        context = {**_detail_context(request, selectors.task_get(task_id=task.pk)), "action_error": exc.message,
                   "action_failed": action}
        return render(request, "dashboard/task_detail.html", context, status=exc.status_code)
    messages.success(request, done)
    return redirect("dashboard:task_detail", task_id=task.pk)
