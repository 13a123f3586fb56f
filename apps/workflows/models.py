"""Tasks and their attempts. History and statistics are read from attempts, never from
counters kept on the task."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from apps.workflows.choices import AttemptOutcome, ResourceClass, Runner, TaskState


class Task(models.Model):
    kind = models.CharField(max_length=100, help_text="The skill that runs it")
    payload = models.JSONField(default=dict, blank=True)
    required_capabilities = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    priority = models.IntegerField(default=0, help_text="Higher runs first")
    runner = models.CharField(max_length=10, choices=Runner.choices)
    state = models.CharField(max_length=10, choices=TaskState.choices, default=TaskState.QUEUED)

    # resources and routing
    resource_class = models.CharField(max_length=3, choices=ResourceClass.choices)
    vram_mb = models.PositiveIntegerField(null=True, blank=True, help_text="GPU memory the task needs")
    model = models.CharField(max_length=128, blank=True, help_text="Model the task declares it uses")
    routing_score = models.FloatField(null=True, blank=True, help_text="GPU likelihood 0..1 from the classifier")
    routing_reason = models.CharField(max_length=300, blank=True)
    wait_reason = models.CharField(max_length=300, blank=True, help_text="Why a queued task is not running yet")
    # placement: the Celery queue it was sent to, and the GPU it is pinned to
    queue = models.CharField(max_length=200, blank=True, help_text="cpu, gpu.<node>.<index>; blank for agent pull")
    gpu_node = models.CharField(max_length=200, blank=True, help_text="Agent whose GPU runs it")
    gpu_index = models.SmallIntegerField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="Sent to a Celery queue, not started yet")
    dispatch_token = models.UUIDField(null=True, blank=True, editable=False)

    # timeouts (seconds) and retry policy
    queued_timeout_s = models.PositiveIntegerField(null=True, blank=True)
    attempt_timeout_s = models.PositiveIntegerField(default=300, help_text="Lease length; agents renew it")
    overall_timeout_s = models.PositiveIntegerField(null=True, blank=True)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    backoff_base_s = models.FloatField(default=2.0)
    backoff_max_s = models.FloatField(default=300.0)

    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)

    # who holds it now
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    assigned_agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned_tasks",
        help_text="Only this agent may claim it (set by a reassign)",
    )
    not_before = models.DateTimeField(null=True, blank=True, help_text="Retry backoff: not claimed before this")

    result = models.JSONField(null=True, blank=True)
    error_type = models.CharField(max_length=30, blank=True)
    error_message = models.TextField(blank=True)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The claim: queued tasks of a runner, best first.
            models.Index(
                fields=["runner", "-priority", "id"], name="task_claimable_idx",
                condition=Q(state="queued"),
            ),
            models.Index(fields=["lease_expires_at"], name="task_lease_idx", condition=Q(state__in=["leased", "running"])),
            models.Index(fields=["state", "created_at"], name="task_state_created_idx"),
            models.Index(fields=["kind", "created_at"], name="task_kind_created_idx"),
            models.Index(fields=["agent", "state"], name="task_agent_state_idx"),
            models.Index(
                fields=["runner", "-priority", "id"], name="task_dispatchable_idx",
                condition=Q(state="queued", dispatched_at__isnull=True),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="task_max_attempts_positive"),
            models.CheckConstraint(
                condition=~Q(state__in=["leased", "running"]) | Q(agent__isnull=False, lease_expires_at__isnull=False),
                name="task_active_has_holder",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} ({self.state})"


class TaskAttempt(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="attempts")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=12, choices=AttemptOutcome.choices, default=AttemptOutcome.RUNNING)
    error_type = models.CharField(max_length=30, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        ordering = ["task", "number"]
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="attempt_number_unique"),
            # At most one attempt of a task is running: a task is never held twice.
            models.UniqueConstraint(fields=["task"], condition=Q(outcome="running"), name="attempt_one_running"),
        ]
        indexes = [
            models.Index(fields=["ended_at"], name="attempt_ended_idx"),
            models.Index(fields=["agent", "ended_at"], name="attempt_agent_ended_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.task_id} attempt {self.number}: {self.outcome}"
