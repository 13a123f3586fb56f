"""One error shape for the whole API, whatever raised it (DRF, Django or a service)."""

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.errors import ApplicationError, error_body

_DRF_CODES = {
    drf.ParseError: "malformed_json",
    drf.NotAuthenticated: "authentication_required",
    drf.AuthenticationFailed: "authentication_failed",
    drf.PermissionDenied: "permission_denied",
    drf.NotFound: "not_found",
    drf.MethodNotAllowed: "method_not_allowed",
    drf.UnsupportedMediaType: "unsupported_media_type",
    drf.Throttled: "throttled",
    drf.ValidationError: "invalid",
}


def _flatten(detail):
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def validation_error_body(detail) -> dict:
    """A serializer's errors as our error shape (shared with the heartbeat fast path)."""
    fields = _flatten(detail)
    if isinstance(fields, list):
        fields = {"non_field_errors": fields}
    names = ", ".join(sorted(fields)) or "input"
    return error_body("invalid", f"Invalid input: {names}", fields)


def exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("body_too_large", "Request body is too large"), status=413)
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, drf.ValidationError):
        response.data = validation_error_body(exc.detail)
    else:
        response.data = error_body(code, str(exc.detail) if hasattr(exc, "detail") else str(exc))
    return response
