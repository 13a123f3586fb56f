from django.db import models


class TaskState(models.TextChoices):
    QUEUED = "queued", "Queued"
    LEASED = "leased", "Leased"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    TIMED_OUT = "timed_out", "Timed out"


ACTIVE_STATES = (TaskState.LEASED, TaskState.RUNNING)
FINAL_STATES = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT)


class Runner(models.TextChoices):
    AGENT = "agent", "External agent (pull)"
    CELERY = "celery", "Celery worker"


class ResourceClass(models.TextChoices):
    CPU = "cpu", "CPU"
    GPU = "gpu", "GPU"


class AttemptOutcome(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    LEASE_LOST = "lease_lost", "Lease lost"
    CANCELLED = "cancelled", "Cancelled"


class ErrorType(models.TextChoices):
    """How a failed attempt is classified (failure patterns are counted by these)."""

    TIMEOUT = "timeout", "Timeout"
    CONNECTION = "connection", "Connection"
    RATE_LIMIT = "rate_limit", "Rate limit"
    SERIALIZATION = "serialization", "Serialization"
    LEASE_LOST = "lease_lost", "Lease lost"
    AGENT_ERROR = "agent_error", "Agent error"
    REJECTED = "rejected", "Rejected"
    RESOURCE = "resource", "Resource exhausted"
    CANCELLED = "cancelled", "Cancelled"
    UNKNOWN = "unknown", "Unknown"
