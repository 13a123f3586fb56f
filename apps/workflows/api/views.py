"""Task API: thin adapters over apps.workflows.services / selectors."""

from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents.authentication import AgentPrincipal, AgentTokenAuthentication
from apps.core.errors import NotFound
from apps.security.permissions import IsOperator, IsViewer
from apps.workflows import selectors, services
from apps.workflows.api import serializers as s

ERRORS = {400: dict, 401: dict, 403: dict, 404: dict, 409: dict}


class IsAgent(BasePermission):
    message = "This endpoint needs an agent token"

    def has_permission(self, request, view):
        return isinstance(request.user, AgentPrincipal)


class _AgentApi(APIView):
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAgent]


def _detail(task):
    task.attempt_list = selectors.task_attempts(task_id=task.pk)
    return s.TaskDetailSerializer(task).data


class TaskListCreateApi(APIView):
    def get_permissions(self):
        return [IsOperator()] if self.request.method == "POST" else [IsViewer()]

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, many=True), OpenApiParameter("kind", str),
            OpenApiParameter("agent", str), OpenApiParameter("runner", str, enum=["agent", "celery"]),
            OpenApiParameter("since", str), OpenApiParameter("until", str),
            OpenApiParameter("limit", int), OpenApiParameter("offset", int),
        ],
        responses={200: s.TaskSerializer(many=True), **ERRORS}, summary="List tasks",
    )
    def get(self, request):
        q = request.query_params
        tasks = selectors.task_list(state=q.getlist("state"), kind=q.get("kind"), agent_id=q.get("agent"),
                                    runner=q.get("runner"), since=q.get("since"), until=q.get("until"))
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(tasks, request, view=self)
        return paginator.get_paginated_response(s.TaskSerializer(page, many=True).data)

    @extend_schema(request=s.TaskCreateSerializer, responses={201: s.TaskDetailSerializer, 200: s.TaskDetailSerializer, **ERRORS},
                   summary="Queue a task (same idempotency key: the first task, 200)")
    def post(self, request):
        data = s.TaskCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        task, created = services.task_create(created_by=request.user, **data.validated_data)
        return Response(_detail(task), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class TaskDetailApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(responses={200: s.TaskDetailSerializer, **ERRORS}, summary="One task with its attempts")
    def get(self, request, task_id):
        task = selectors.task_get(task_id=task_id)
        if task is None:
            raise NotFound(f"No task {task_id}", code="unknown_task")
        return Response(_detail(task))


class TaskClaimApi(_AgentApi):
    """Documents the claim; requests are answered by `task_claim` below (async long poll)."""

    @extend_schema(request=s.ClaimInputSerializer, responses={200: s.ClaimOutputSerializer, **ERRORS},
                   auth=[{"agentToken": []}],
                   summary="Agent claims up to `limit` tasks it can run (leased), waiting up to `wait` s for work")
    def post(self, request):
        data = s.ClaimInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        claimed = services.tasks_claim(agent=request.auth, limit=data.validated_data["limit"])
        return Response(s.ClaimOutputSerializer({"tasks": claimed}).data)


class TaskRenewApi(_AgentApi):
    @extend_schema(request=s.RenewInputSerializer, responses={200: s.RenewOutputSerializer, **ERRORS},
                   auth=[{"agentToken": []}], summary="Agent renews the leases it holds")
    def post(self, request):
        data = s.RenewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(services.tasks_renew(agent=request.auth, task_ids=data.validated_data["task_ids"]))


class TaskCompleteApi(_AgentApi):
    @extend_schema(request=s.CompleteInputSerializer, responses={200: s.TaskDetailSerializer, **ERRORS},
                   auth=[{"agentToken": []}], summary="Holder completes a task with its result")
    def post(self, request, task_id):
        data = s.CompleteInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        task = services.task_complete(agent=request.auth, task_id=task_id, **data.validated_data)
        return Response(_detail(task))


class TaskFailApi(_AgentApi):
    @extend_schema(request=s.FailInputSerializer, responses={200: s.TaskDetailSerializer, **ERRORS},
                   auth=[{"agentToken": []}], summary="Holder reports a failure (retried per the task's policy)")
    def post(self, request, task_id):
        data = s.FailInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        task = services.task_fail(agent=request.auth, task_id=task_id, **data.validated_data)
        return Response(_detail(task))


class TaskCancelApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(request=None, responses={200: s.TaskDetailSerializer, **ERRORS}, summary="Cancel a task")
    def post(self, request, task_id):
        return Response(_detail(services.task_cancel(task_id=task_id, actor=request.user)))


class TaskRetryApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(request=s.RetryInputSerializer, responses={200: s.TaskDetailSerializer, **ERRORS},
                   summary="Retry a failed, timed-out or cancelled task, optionally with a priority boost")
    def post(self, request, task_id):
        data = s.RetryInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        task = services.task_retry(task_id=task_id, actor=request.user, **data.validated_data)
        return Response(_detail(task))


class TaskReassignApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(request=s.ReassignInputSerializer, responses={200: s.TaskDetailSerializer, **ERRORS},
                   summary="Move a task to another agent (or the least-loaded healthy one)")
    def post(self, request, task_id):
        data = s.ReassignInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        task = services.task_reassign(task_id=task_id, agent_id=data.validated_data["agent"], actor=request.user)
        return Response(_detail(task))


# --- the claim, with a long poll --------------------------------------------------------------

@csrf_exempt  # bearer-token endpoint: no cookies, no CSRF
async def task_claim(request):
    """POST /api/v1/tasks/claim: the real endpoint (TaskClaimApi documents it).

    An async view: an agent waiting up to `wait` seconds for work holds no thread, so
    thousands can wait at once; it is woken by PostgreSQL NOTIFY (wakeup.py) the moment
    a task becomes claimable, not by polling. Each claim attempt is a short call into
    the same sync thread as Django's other views; only the waiting is on the event loop.
    """
    import asyncio
    import json

    from asgiref.sync import sync_to_async
    from django.http import JsonResponse

    from apps.agents.services import agent_authenticate
    from apps.core.api import validation_error_body
    from apps.core.errors import ApplicationError, error_body
    from apps.core.tokens import bearer_required
    from apps.workflows.wakeup import wakeup

    if request.method != "POST":
        return JsonResponse(error_body("method_not_allowed", f"Method {request.method} not allowed"), status=405)

    def authenticate():
        return agent_authenticate(raw_token=bearer_required(request.headers.get("Authorization")))

    def claim(agent, limit):
        return services.tasks_claim(agent=agent, limit=limit)

    try:
        agent = await sync_to_async(authenticate)()
    except ApplicationError as exc:
        return JsonResponse(error_body(exc.code, exc.message), status=exc.status_code)
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse(error_body("malformed_json", "The body is not JSON"), status=400)
    data = s.ClaimInputSerializer(data=body if isinstance(body, dict) else None)
    if not data.is_valid():
        return JsonResponse(validation_error_body(data.errors), status=400)
    limit, wait = data.validated_data["limit"], data.validated_data["wait"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        event = wakeup.current() if wait else None
        claimed = await sync_to_async(claim)(agent, limit)
        remaining = deadline - loop.time()
        if claimed or remaining <= 0:
            break
        await wakeup.wait(event, remaining)
    return JsonResponse(s.ClaimOutputSerializer({"tasks": claimed}).data)
