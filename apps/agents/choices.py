from django.db import models


class AgentStatus(models.TextChoices):
    ONLINE = "online", "Online"
    LATE = "late", "Late"
    STALE = "stale", "Stale"
    ISOLATED = "isolated", "Isolated"
    OFFLINE = "offline", "Offline"


class AgentState(models.TextChoices):
    """What the agent says it is doing (reported in each heartbeat)."""

    IDLE = "idle", "Idle"
    BUSY = "busy", "Busy"
    DRAINING = "draining", "Draining"


class AgentKind(models.TextChoices):
    AGENT = "agent", "Agent"
    WORKER = "worker", "Worker"


class CommandType(models.TextChoices):
    RESTART = "restart", "Restart"
    DRAIN = "drain", "Drain"
    ISOLATE = "isolate", "Isolate"
    RELEASE = "release", "Release"
    CONFIG = "config", "Config"


class CommandStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class EventKind(models.TextChoices):
    REGISTERED = "registered", "Registered"
    REPLACED = "replaced", "Re-registered (replaced)"
    STATUS_CHANGED = "status_changed", "Status changed"
    COMMAND_ISSUED = "command_issued", "Command issued"
    COMMAND_ACKED = "command_acked", "Command acknowledged"
    GOODBYE = "goodbye", "Said goodbye"
