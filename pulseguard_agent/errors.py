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
