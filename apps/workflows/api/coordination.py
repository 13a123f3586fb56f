"""Coordination API: success rate, failure patterns, diagnostics (viewer role).

Thin adapters over apps.workflows.coordination; the figures are defined in docs/coordination.md.
"""

import re
from datetime import timedelta

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents.api.serializers import StrictSerializer
from apps.security.permissions import IsViewer
from apps.workflows import coordination

ERRORS = {400: dict, 401: dict, 403: dict}
_DURATION = re.compile(r"^(\d{1,7})([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class WindowField(serializers.Field):
    """A duration: `90m`, `24h`, `7d`, `3600s` or plain seconds."""

    default_error_messages = {
        "invalid": "A duration such as 90m, 24h, 7d or a number of seconds.",
        "range": "Between {low} and {high}.",
    }

    def to_internal_value(self, data):
        match = _DURATION.match(str(data).strip().lower())
        if not match:
            self.fail("invalid")
        value = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
        if not coordination.MIN_WINDOW <= value <= coordination.MAX_WINDOW:
            self.fail("range", low="15m", high="30d")
        return value

    def to_representation(self, value):
        return int(value.total_seconds())


class _FilterInput(StrictSerializer):
    window = WindowField(required=False, default=coordination.DEFAULT_WINDOW)
    agent = serializers.UUIDField(required=False)
    kind = serializers.CharField(required=False, max_length=100)


class SuccessRateInput(_FilterInput):
    group_by = serializers.ChoiceField(choices=list(coordination.GROUP_FIELDS), default="fleet")
    limit = serializers.IntegerField(required=False, default=20, min_value=1, max_value=500)


class _WindowOut(serializers.Serializer):
    # "from" is a Python keyword: declared in get_fields.
    to = serializers.DateTimeField()
    seconds = serializers.IntegerField()

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField()
        return fields


class _TrendOut(serializers.Serializer):
    direction = serializers.ChoiceField(choices=["improving", "declining", "stable", "not_enough_data"])
    earlier_rate = serializers.FloatField(allow_null=True)
    recent_rate = serializers.FloatField(allow_null=True)
    change_pp = serializers.FloatField(allow_null=True, help_text="Recent minus earlier, percentage points")
    z = serializers.FloatField(allow_null=True, help_text="Two-proportion z statistic of the change")
    reason = serializers.CharField()


class _HourOut(serializers.Serializer):
    hour = serializers.DateTimeField()
    finished = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)


class _RateGroupOut(serializers.Serializer):
    key = serializers.CharField(allow_null=True, help_text="Agent id or kind; null for the fleet")
    label = serializers.CharField()
    finished = serializers.IntegerField(help_text="Succeeded, failed, timed-out and lease-lost attempts")
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Failed, timed-out and lease-lost attempts")
    cancelled = serializers.IntegerField(help_text="Counted apart: not part of the rate")
    rate = serializers.FloatField(allow_null=True, help_text="succeeded / finished; null with no finished attempt")
    trend = _TrendOut()
    hourly = _HourOut(many=True, help_text="UTC hours with finished attempts")


class SuccessRateOut(serializers.Serializer):
    window = _WindowOut()
    group_by = serializers.CharField()
    groups_total = serializers.IntegerField()
    groups = _RateGroupOut(many=True)


class _CountedAgentOut(serializers.Serializer):
    agent = serializers.CharField(allow_null=True)
    name = serializers.CharField()
    count = serializers.IntegerField()


class _CountedKindOut(serializers.Serializer):
    kind = serializers.CharField()
    count = serializers.IntegerField()


class _ExampleOut(serializers.Serializer):
    task_id = serializers.IntegerField()
    attempt = serializers.IntegerField()
    agent = serializers.CharField(allow_null=True)
    agent_name = serializers.CharField(allow_null=True)
    kind = serializers.CharField()
    outcome = serializers.CharField()
    ended_at = serializers.DateTimeField()
    message = serializers.CharField()


class _PatternOut(serializers.Serializer):
    error_type = serializers.CharField()
    label = serializers.CharField()
    count = serializers.IntegerField()
    share = serializers.FloatField(help_text="Of all failures in the window")
    agents_affected = serializers.IntegerField()
    kinds_affected = serializers.IntegerField()
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    top_agents = _CountedAgentOut(many=True)
    top_kinds = _CountedKindOut(many=True)
    examples = _ExampleOut(many=True)
    recommendation = serializers.CharField()


class FailuresOut(serializers.Serializer):
    window = _WindowOut()
    finished = serializers.IntegerField()
    failures = serializers.IntegerField()
    failure_rate = serializers.FloatField(allow_null=True)
    patterns = _PatternOut(many=True)


class _QueueOut(serializers.Serializer):
    queue = serializers.CharField(help_text="runner/resource_class")
    runner = serializers.CharField()
    resource_class = serializers.CharField()
    depth = serializers.IntegerField(help_text="Queued tasks")
    ready = serializers.IntegerField(help_text="Queued, claimable or dispatchable now (not backing off, not sent)")
    backing_off = serializers.IntegerField(help_text="Queued, waiting out a retry backoff")
    dispatched = serializers.IntegerField(help_text="Queued and sent to a Celery queue, not started by a worker yet")
    active = serializers.IntegerField(help_text="Leased or running")
    oldest_age_s = serializers.FloatField(allow_null=True)
    top_priority = serializers.IntegerField(allow_null=True)


class _CeleryQueueOut(serializers.Serializer):
    queue = serializers.CharField(help_text="cpu, or a GPU's own queue gpu.<node>.<index>")
    waiting = serializers.IntegerField(help_text="Sent, not started by a worker yet")
    running = serializers.IntegerField()


class _WaitingOut(serializers.Serializer):
    task_id = serializers.IntegerField()
    kind = serializers.CharField()
    queue = serializers.CharField()
    priority = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    age_s = serializers.FloatField()
    wait_reason = serializers.CharField(help_text="As recorded on the task")
    why = serializers.CharField(help_text="Best explanation now (paused, backoff, no capable agent, ...)")


class _StuckTaskOut(serializers.Serializer):
    task_id = serializers.IntegerField()
    kind = serializers.CharField()
    state = serializers.CharField()
    agent = serializers.CharField()
    agent_name = serializers.CharField()
    agent_status = serializers.CharField()
    lease_expires_at = serializers.DateTimeField()
    overdue_s = serializers.FloatField()
    reason = serializers.CharField()


class _StuckOut(serializers.Serializer):
    count = serializers.IntegerField()
    tasks = _StuckTaskOut(many=True)


class _FailingAgentOut(serializers.Serializer):
    agent = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    failed = serializers.IntegerField()
    finished = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)
    top_error_type = serializers.CharField(allow_null=True)


class _DispatchOut(serializers.Serializer):
    paused = serializers.BooleanField()
    reason = serializers.CharField()
    changed_at = serializers.DateTimeField(allow_null=True)
    changed_by = serializers.CharField(allow_null=True)


class DiagnosticsOut(serializers.Serializer):
    now = serializers.DateTimeField()
    window = _WindowOut()
    dispatch = _DispatchOut()
    queues = _QueueOut(many=True)
    celery_queues = _CeleryQueueOut(many=True)
    oldest_queued = _WaitingOut(many=True)
    stuck = _StuckOut()
    failing_agents = _FailingAgentOut(many=True)
    agents = serializers.DictField(child=serializers.IntegerField(), help_text="Agents by status")


_WINDOW = OpenApiParameter("window", str, description="Duration ending now: 90m, 24h (default), 7d; 15m to 30d")
_FILTERS = [
    _WINDOW,
    OpenApiParameter("agent", str, description="Only this agent's attempts (agent id)"),
    OpenApiParameter("kind", str, description="Only attempts of tasks of this kind"),
]


def _window(v) -> coordination.Window:
    return coordination.window_make(length=v["window"])


class CoordinationSuccessRateApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(
        parameters=[*_FILTERS, OpenApiParameter("group_by", str, enum=list(coordination.GROUP_FIELDS)),
                    OpenApiParameter("limit", int, description="Most groups returned (default 20)")],
        responses={200: SuccessRateOut, **ERRORS},
        summary="Success rate (succeeded / finished attempts) with hourly buckets and a trend",
    )
    def get(self, request):
        data = SuccessRateInput(data=request.query_params)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        result = coordination.success_rate(window=_window(v), agent_id=v.get("agent"), kind=v.get("kind"),
                                           group_by=v["group_by"], limit=v["limit"])
        return Response(SuccessRateOut(result).data)


class CoordinationFailuresApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(parameters=_FILTERS, responses={200: FailuresOut, **ERRORS},
                   summary="Failure patterns by error type, with examples and recommendations")
    def get(self, request):
        data = _FilterInput(data=request.query_params)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        result = coordination.failure_patterns(window=_window(v), agent_id=v.get("agent"), kind=v.get("kind"))
        return Response(FailuresOut(result).data)


class DiagnosticsInput(StrictSerializer):
    window = WindowField(required=False, default=coordination.DEFAULT_WINDOW)


class CoordinationDiagnosticsApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(parameters=[_WINDOW], responses={200: DiagnosticsOut, **ERRORS},
                   summary="Queue depth per queue, oldest waiting tasks, stuck tasks, most-failing agents")
    def get(self, request):
        data = DiagnosticsInput(data=request.query_params)
        data.is_valid(raise_exception=True)
        return Response(DiagnosticsOut(coordination.diagnostics(window=_window(data.validated_data))).data)
