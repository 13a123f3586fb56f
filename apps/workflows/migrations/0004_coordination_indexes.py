"""Indexes for the coordination figures (apps/workflows/coordination.py).

They read a time range of finished attempts. `attempt_window_idx` carries the columns
they group by, so the read is an index-only scan. `attempt_failure_idx` holds only
failed, timed-out and lease-lost attempts, so failure patterns read a few percent of the
window. A lower autovacuum threshold on the attempts table keeps its visibility map
fresh: without it the newest hours (rows just updated from running to finished) would
fall back to reading the heap. Statistics on the hour expression let the planner hash
the hourly buckets.

Built CONCURRENTLY (no write lock on a busy attempts table), hence raw SQL outside a
transaction. They are database-only, not declared in TaskAttempt.Meta, so model state
and migrations stay in step whatever else changes in the model.
"""

from django.db import migrations

INDEXES = {
    "attempt_window_idx": "ON workflows_taskattempt (ended_at) INCLUDE (outcome, agent_id, task_id)",
    "attempt_failure_idx": (
        "ON workflows_taskattempt (ended_at) INCLUDE (error_type, agent_id, task_id) "
        "WHERE outcome IN ('failed', 'timed_out', 'lease_lost')"
    ),
}


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("workflows", "0003_task_assigned_agent"),
    ]

    operations = [
        *(
            migrations.RunSQL(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {spec}",
                              f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            for name, spec in INDEXES.items()
        ),
        # The hourly series groups by this expression (Django's Trunc in UTC). Without
        # statistics on it PostgreSQL guesses one group per row and sorts the whole window
        # (spilling to disk) instead of hashing a few dozen hours.
        migrations.RunSQL(
            "CREATE STATISTICS IF NOT EXISTS attempt_hour_stats "
            "ON (date_trunc('hour', ended_at AT TIME ZONE 'UTC')) FROM workflows_taskattempt",
            "DROP STATISTICS IF EXISTS attempt_hour_stats",
        ),
        migrations.RunSQL(
            "ALTER TABLE workflows_taskattempt SET (autovacuum_vacuum_scale_factor = 0.02, "
            "autovacuum_vacuum_insert_scale_factor = 0.02)",
            "ALTER TABLE workflows_taskattempt RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_vacuum_insert_scale_factor)",
        ),
    ]
