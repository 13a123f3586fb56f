import re
import uuid

import structlog
from django.conf import settings
from django.http import JsonResponse

from apps.core.errors import error_body

REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Binds a request id to every log line of this request and the tasks it starts."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if REQUEST_ID_OK.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


_METRICS_PATH = re.compile(r"^/api/v1/agents/[0-9a-fA-F-]{36}/metrics$")


class BodySizeLimitMiddleware:
    """Refuses oversized bodies before anything parses them (Django only checks forms)."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.default_limit = settings.PULSEGUARD_MAX_BODY_BYTES
        self.metrics_limit = settings.PULSEGUARD_MAX_METRICS_BODY_BYTES

    def __call__(self, request):
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            return JsonResponse(error_body("bad_content_length", "Content-Length is not a number"), status=400)
        # Telemetry batches (up to 5,000 samples) get their own, larger limit.
        limit = self.metrics_limit if _METRICS_PATH.match(request.path_info) else self.default_limit
        if length > limit:
            return JsonResponse(
                error_body("body_too_large", f"Request body is {length} bytes; the limit is {limit}"),
                status=413,
            )
        return self.get_response(request)


class ProbeMiddleware:
    """/healthz, /readyz and /metrics, answered before the Host header check.

    Orchestrators and Prometheus reach a pod by IP, which is rarely in ALLOWED_HOSTS;
    these paths reveal nothing host-specific, so they are served to any Host. /metrics
    wants `Authorization: Bearer <PULSEGUARD_METRICS_TOKEN>` when that is set.
    """

    def __init__(self, get_response):
        from django_prometheus.exports import ExportToDjangoView

        from apps.core import views

        self.get_response = get_response
        self.routes = {"/healthz": views.healthz, "/readyz": views.readyz, "/metrics": ExportToDjangoView}
        self.metrics_token = settings.PULSEGUARD_METRICS_TOKEN

    def __call__(self, request):
        view = self.routes.get(request.path_info)
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return JsonResponse(error_body("method_not_allowed", "Use GET"), status=405)
        if request.path_info == "/metrics" and self.metrics_token:
            from apps.core.tokens import bearer_from_header, constant_time_equal

            given = bearer_from_header(request.headers.get("Authorization")) or ""
            if not constant_time_equal(given, self.metrics_token):
                return JsonResponse(error_body("authentication_required", "/metrics needs the bearer token"), status=401)
        return view(request)
