"""Errors the SDK raises.

Every error carries the server's machine-readable `code` so callers branch on it, not
on message text. `ServerUnavailable` is the transient kind (connection failures, 5xx,
429): worth retrying later. A plain `PulseGuardError` is the server refusing the request
(4xx): sending the same request again will get the same answer.
"""

from __future__ import annotations


class PulseGuardError(Exception):
    """The server refused a request (a 4xx other than 429), or the base of all SDK errors.

    `status` is the HTTP status (None when no response came back), `code` the stable
    error code from the server's `{"error": {...}}` body, `fields` the bad inputs it named,
    `samples` the bad telemetry samples of a refused batch (`[{"index", "field", "reason"}]`).
    """

    def __init__(self, status: int | None, code: str, message: str, fields: dict | None = None,
                 samples: list | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.samples = samples or []

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no response"
        text = f"{self.code}: {self.message} ({where})"
        if self.fields:
            text += f" fields={self.fields}"
        return text

    @property
    def transient(self) -> bool:
        """Whether the same request may succeed if sent again later."""
        return False


class ServerUnavailable(PulseGuardError):
    """The server could not be reached, failed (5xx) or asked us to slow down (429)."""

    def __init__(self, message: str, status: int | None = None, code: str = "server_unavailable"):
        super().__init__(status, code, message)

    @property
    def transient(self) -> bool:
        return True


class AgentRejected(PulseGuardError):
    """The server no longer accepts this agent's identity: the runner stopped for good.

    Raised by `AgentRunner.run()` when a heartbeat is refused with 401/403/404, e.g.
    `invalid_token` after another process re-registered the same name with replace=True.
    Retrying would fight that process, so the runner stops and says why.
    """

    def __init__(self, cause: PulseGuardError, hint: str):
        super().__init__(cause.status, cause.code, f"{cause.message}. {hint}", cause.fields)
        self.cause = cause


# --- tasks (docs/routing.md) -------------------------------------------------------------

# How a failed attempt is classified; the server refuses any other value.
ERROR_TYPES = ("timeout", "connection", "rate_limit", "serialization", "lease_lost", "agent_error", "rejected",
               "resource", "cancelled", "unknown")
# The server's answers to a holder acting on a task it no longer holds.
TASK_LOST_CODES = ("not_holder", "lease_expired", "already_finished", "unknown_task")


class TaskLost(PulseGuardError):
    """This agent no longer holds the task: stop working on it and report nothing more.

    `code` says why: `not_holder` (reassigned, or held by another agent now),
    `lease_expired` (not renewed in time; it has been or will be given to another agent),
    `already_finished` (cancelled, timed out, or completed by an earlier try of the same
    request), `unknown_task` (deleted), or `lost` (a renewal answered that the lease is gone).
    """

    def __init__(self, task_id: int, code: str, message: str, status: int | None = 409):
        super().__init__(status, code, message)
        self.task_id = task_id


class TaskError(Exception):
    """Raise from a task handler to fail the task with a chosen `error_type`.

    `error_type` is one of ERROR_TYPES; `retryable=False` asks the server not to try the
    task again (it never retries `rejected` and `serialization` anyway).
    """

    def __init__(self, message: str, error_type: str = "agent_error", *, retryable: bool = True):
        if error_type not in ERROR_TYPES:
            raise ValueError(f"error_type must be one of {', '.join(ERROR_TYPES)} (got {error_type!r})")
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


class TaskRejected(TaskError):
    """Raise from a task handler for a task this agent will not run (a bad or unsupported
    payload): it fails at once as `rejected` and is not retried."""

    def __init__(self, message: str):
        super().__init__(message, "rejected", retryable=False)
