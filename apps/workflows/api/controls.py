"""Emergency controls API: operator role, explicit confirmation, audited (apps.workflows.controls).

`POST /api/v1/controls/<action>` with `{"confirm": "<action>"}`; anything else is a 400
`confirmation_required` and changes nothing. `GET /api/v1/controls` (viewer) shows the
dispatch switch and the latest audited control actions.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents.api.serializers import StrictSerializer
from apps.core.errors import ApplicationError
from apps.security.permissions import IsOperator, IsViewer
from apps.security.selectors import audit_records_recent
from apps.workflows import controls

ERRORS = {400: dict, 401: dict, 403: dict}


class ControlInput(StrictSerializer):
    confirm = serializers.CharField(required=False, allow_blank=True, max_length=50,
                                    help_text="The action's name, e.g. stop-all: says the caller means it")
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500,
                                   help_text="Why; kept in the audit record (and shown while paused)")


class DispatchStateOut(serializers.Serializer):
    paused = serializers.BooleanField()
    reason = serializers.CharField()
    changed_at = serializers.DateTimeField(allow_null=True)
    changed_by = serializers.CharField(allow_null=True)


class AuditRecordOut(serializers.Serializer):
    id = serializers.IntegerField()
    actor = serializers.CharField(source="actor_name")
    action = serializers.CharField()
    target = serializers.CharField()
    affected = serializers.IntegerField()
    details = serializers.JSONField()
    created_at = serializers.DateTimeField()


class ControlResultOut(serializers.Serializer):
    action = serializers.CharField()
    affected = serializers.IntegerField(help_text="How many things changed; 0 when there was nothing to do")
    details = serializers.JSONField()
    audit_id = serializers.IntegerField()
    dispatch = DispatchStateOut()


class ActionOut(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    path = serializers.CharField()


class ControlsStateOut(serializers.Serializer):
    dispatch = DispatchStateOut()
    actions = ActionOut(many=True)
    recent = AuditRecordOut(many=True)


def _dispatch_state() -> dict:
    control = controls.fleet_control_get()
    return {"paused": control.paused, "reason": control.reason, "changed_at": control.changed_at,
            "changed_by": control.changed_by.get_username() if control.changed_by else None}


class ControlsStateApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(responses={200: ControlsStateOut, 401: dict, 403: dict},
                   summary="Dispatch switch, the available controls and the latest audited control actions")
    def get(self, request):
        return Response(ControlsStateOut({
            "dispatch": _dispatch_state(),
            "actions": [{"name": name, "description": text, "path": f"/api/v1/controls/{name}"}
                        for name, text in controls.ACTIONS.items()],
            "recent": audit_records_recent(action_prefix="controls.", limit=20),
        }).data)


class _ControlApi(APIView):
    permission_classes = [IsOperator]
    action: str

    def run(self, request):
        data = ControlInput(data=request.data or {})
        data.is_valid(raise_exception=True)
        if data.validated_data.get("confirm") != self.action:
            raise ApplicationError(
                f'{controls.ACTIONS[self.action]} Send {{"confirm": "{self.action}"}} to go ahead.',
                code="confirmation_required", fields={"confirm": [f'Must be "{self.action}".']},
            )
        result = controls.control_run(action=self.action, actor=request.user, reason=data.validated_data["reason"])
        return Response(ControlResultOut({
            "action": result.action, "affected": result.affected, "details": result.details,
            "audit_id": result.audit_id, "dispatch": _dispatch_state(),
        }).data)


def _control_view(action: str, summary: str):
    """One documented view class per action, so each has its own path and operation in the schema."""
    def post(self, request):
        return self.run(request)

    post = extend_schema(request=ControlInput, responses={200: ControlResultOut, **ERRORS}, summary=summary,
                         description=controls.ACTIONS[action] + f' Needs {{"confirm": "{action}"}}; operator role; '
                         "audited; idempotent.")(post)
    name = "Control" + "".join(part.title() for part in action.split("-")) + "Api"
    return type(name, (_ControlApi,), {"action": action, "post": post})


ControlPauseApi = _control_view(controls.PAUSE, "Pause dispatch (maintenance mode)")
ControlResumeApi = _control_view(controls.RESUME, "Resume dispatch")
ControlStopAllApi = _control_view(controls.STOP_ALL, "Stop (cancel) every leased or running task")
ControlClearQueueApi = _control_view(controls.CLEAR_QUEUE, "Clear the queue (cancel every queued task)")
ControlRestartAgentsApi = _control_view(controls.RESTART_AGENTS, "Restart every online or late agent")
ControlAutoHealApi = _control_view(controls.AUTO_HEAL, "Auto-heal: requeue lost work, reset breakers, restart stale agents")
