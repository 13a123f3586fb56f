"""Errors that services raise and every adapter turns into the same JSON shape.

`{"error": {"code": "name_taken", "message": "...", "fields": {...}}}`: `code` is stable
and machine-readable, `message` is for people, `fields` (optional) names bad inputs.
"""


class ApplicationError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, fields: dict | None = None, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code
        self.fields = fields or {}


class NotFound(ApplicationError):
    status_code = 404
    code = "not_found"


class Conflict(ApplicationError):
    status_code = 409
    code = "conflict"


class AuthenticationFailed(ApplicationError):
    status_code = 401
    code = "authentication_failed"


class PermissionDenied(ApplicationError):
    status_code = 403
    code = "permission_denied"


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}
