"""Partitions of the telemetry tables: created ahead of time, dropped whole when old.

Raw tables and 1-minute rollups have one partition per UTC day, hourly rollups one per
month. `partitions_ensure` makes every partition an accepted sample could land in (from
the oldest day the retention keeps to a few days ahead); `partitions_drop_expired`
detaches and drops partitions entirely older than their retention: a DROP TABLE, not a
DELETE, so retention costs nothing however many rows there are.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone

import structlog
from django.conf import settings
from django.db import connection, transaction

from apps.metrics.schema import PARTITIONED

log = structlog.get_logger(__name__)

DAYS_AHEAD = 3


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _next_month(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


def _ranges(granularity: str, first: date, last: date):
    """(suffix, start, end) for every partition covering [first, last]."""
    if granularity == "day":
        d = first
        while d <= last:
            yield d.strftime("%Y%m%d"), d, d + timedelta(days=1)
            d += timedelta(days=1)
    else:
        d = _month_start(first)
        while d <= last:
            nxt = _next_month(d)
            yield d.strftime("%Y%m"), d, nxt
            d = nxt


def _utc(d: date) -> str:
    return datetime(d.year, d.month, d.day, tzinfo=dt_timezone.utc).isoformat()


def _existing(cursor, table: str) -> set[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
        [table],
    )
    return {row[0] for row in cursor.fetchall()}


def partitions_ensure(*, today: date | None = None) -> list[str]:
    """Create the missing partitions of every telemetry table; returns the new names."""
    today = today or datetime.now(dt_timezone.utc).date()
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        # One creator at a time (beat, migrate and a retrying ingest may meet here).
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('pulseguard.metrics.partitions'))")
        for table, (granularity, retention_setting) in PARTITIONED.items():
            keep_days = getattr(settings, retention_setting)
            first = today - timedelta(days=keep_days)
            existing = _existing(cursor, table)
            for suffix, start, end in _ranges(granularity, first, today + timedelta(days=DAYS_AHEAD)):
                name = f"{table}_p{suffix}"
                if name in existing:
                    continue
                cursor.execute(
                    f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{table}" '
                    f"FOR VALUES FROM ('{_utc(start)}') TO ('{_utc(end)}')"
                )
                created.append(name)
    if created:
        log.info("metrics_partitions_created", count=len(created), first=created[0], last=created[-1])
    return created


def partitions_drop_expired(*, today: date | None = None) -> list[str]:
    """Drop partitions whose whole range is older than their table's retention."""
    today = today or datetime.now(dt_timezone.utc).date()
    dropped = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('pulseguard.metrics.partitions'))")
        for table, (granularity, retention_setting) in PARTITIONED.items():
            cutoff = today - timedelta(days=getattr(settings, retention_setting))
            for name in sorted(_existing(cursor, table)):
                suffix = name.rsplit("_p", 1)[-1]
                try:
                    if granularity == "day":
                        end = datetime.strptime(suffix, "%Y%m%d").date() + timedelta(days=1)
                    else:
                        end = _next_month(datetime.strptime(suffix, "%Y%m").date())
                except ValueError:
                    continue  # not one of ours
                if end <= cutoff:
                    cursor.execute(f'DROP TABLE "{name}"')
                    dropped.append(name)
    if dropped:
        log.info("metrics_partitions_dropped", count=len(dropped), names=dropped)
    return dropped


def partitions_ensure_after_migrate(sender, **kwargs):
    from django.db import connections

    using = kwargs.get("using", "default")
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT to_regclass('metrics_host_sample')")
        if cursor.fetchone()[0] is None:
            return  # migrated backwards, or not yet
    partitions_ensure()
