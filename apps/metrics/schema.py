"""The telemetry tables, as SQL: Django has no partitioned tables, so they are made here.

Raw samples live in tables partitioned by day (declarative RANGE partitioning on ts), so
retention is a DROP of whole partitions and a query for an hour touches one partition.
Rollups (1 minute, 1 hour) are ordinary tables keyed by (agent, bucket[, device]) and
partitioned too, so they age out the same way. The all-zero agent id holds the fleet-wide
rollup of each bucket (FLEET_ID), so a fleet chart reads one row per bucket.

Migration 0001 keeps its own copy of the SQL create_sql() gave when it was written,
so later edits here never rewrite history: change tables with new migrations.
"""

FLEET_ID = "00000000-0000-0000-0000-000000000000"

HOST_COLUMNS = {
    "cpu_percent": "real", "load1": "real", "load5": "real", "load15": "real",
    "memory_used_bytes": "bigint", "memory_total_bytes": "bigint",
    "disk_used_bytes": "bigint", "disk_total_bytes": "bigint",
    "disk_read_bps": "double precision", "disk_write_bps": "double precision",
    "net_rx_bps": "double precision", "net_tx_bps": "double precision",
}
GPU_COLUMNS = {
    "utilization_percent": "real", "memory_util_percent": "real",
    "memory_used_bytes": "bigint", "memory_free_bytes": "bigint", "memory_total_bytes": "bigint",
    "temperature_c": "real", "power_w": "real", "power_limit_w": "real",
    "sm_clock_mhz": "real", "mem_clock_mhz": "real", "energy_mj": "double precision",
    "ecc_sbe_total": "bigint", "ecc_dbe_total": "bigint", "xid_errors": "bigint",
}
# Latency histogram edges (ms) of the LLM rollups: p50 / p95 over months come from these.
LATENCY_EDGES_MS = [50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 20000, 30000, 60000]
LATENCY_BUCKETS = len(LATENCY_EDGES_MS) + 1  # the last one is "slower than 60 s"

# name -> (partition granularity, setting holding its retention in days)
PARTITIONED = {
    "metrics_host_sample": ("day", "PULSEGUARD_RETENTION_RAW_DAYS"),
    "metrics_gpu_sample": ("day", "PULSEGUARD_RETENTION_RAW_DAYS"),
    "metrics_llm_call": ("day", "PULSEGUARD_RETENTION_RAW_DAYS"),
    "metrics_custom_sample": ("day", "PULSEGUARD_RETENTION_RAW_DAYS"),
    "metrics_host_1m": ("day", "PULSEGUARD_RETENTION_MINUTE_DAYS"),
    "metrics_gpu_1m": ("day", "PULSEGUARD_RETENTION_MINUTE_DAYS"),
    "metrics_llm_1m": ("day", "PULSEGUARD_RETENTION_MINUTE_DAYS"),
    "metrics_host_1h": ("month", "PULSEGUARD_RETENTION_ROLLUP_DAYS"),
    "metrics_gpu_1h": ("month", "PULSEGUARD_RETENTION_ROLLUP_DAYS"),
    "metrics_llm_1h": ("month", "PULSEGUARD_RETENTION_ROLLUP_DAYS"),
}


def _gauge_rollup_columns(columns: dict) -> str:
    return ",\n    ".join(f"{c}_avg double precision, {c}_min double precision, {c}_max double precision" for c in columns)


def _hist_columns() -> str:
    return ", ".join(f"lat_h{i} integer NOT NULL DEFAULT 0" for i in range(LATENCY_BUCKETS))


def create_sql(host_columns: dict = HOST_COLUMNS, gpu_columns: dict = GPU_COLUMNS) -> str:
    host_cols = ",\n    ".join(f"{c} {t}" for c, t in host_columns.items())
    gpu_cols = ",\n    ".join(f"{c} {t}" for c, t in gpu_columns.items())
    return f"""
CREATE TABLE metrics_host_sample (
    agent_id uuid NOT NULL,
    ts timestamptz NOT NULL,
    {host_cols}
) PARTITION BY RANGE (ts);
CREATE INDEX metrics_host_sample_agent_ts ON metrics_host_sample (agent_id, ts);

CREATE TABLE metrics_gpu_sample (
    agent_id uuid NOT NULL,
    ts timestamptz NOT NULL,
    gpu_index smallint NOT NULL,
    {gpu_cols},
    processes jsonb
) PARTITION BY RANGE (ts);
CREATE INDEX metrics_gpu_sample_agent_ts ON metrics_gpu_sample (agent_id, ts);

CREATE TABLE metrics_llm_call (
    agent_id uuid NOT NULL,
    ts timestamptz NOT NULL,
    provider text NOT NULL,
    model text NOT NULL,
    operation text NOT NULL,
    tokens_in integer NOT NULL,
    tokens_out integer NOT NULL,
    tokens_cached integer NOT NULL,
    latency_ms real,
    ttft_ms real,
    ok boolean NOT NULL,
    error_type text NOT NULL DEFAULT '',
    cost_usd double precision,
    cost_source text NOT NULL,
    session_id text NOT NULL DEFAULT '',
    workflow_id text NOT NULL DEFAULT '',
    task_id text NOT NULL DEFAULT ''
) PARTITION BY RANGE (ts);
CREATE INDEX metrics_llm_call_agent_ts ON metrics_llm_call (agent_id, ts);
CREATE INDEX metrics_llm_call_ts ON metrics_llm_call USING brin (ts);

CREATE TABLE metrics_custom_sample (
    agent_id uuid NOT NULL,
    ts timestamptz NOT NULL,
    name text NOT NULL,
    type text NOT NULL,
    value double precision NOT NULL,
    labels jsonb NOT NULL DEFAULT '{{}}'
) PARTITION BY RANGE (ts);
CREATE INDEX metrics_custom_sample_name_agent_ts ON metrics_custom_sample (name, agent_id, ts);

CREATE TABLE metrics_host_1m (
    agent_id uuid NOT NULL,
    bucket timestamptz NOT NULL,
    n integer NOT NULL,
    {_gauge_rollup_columns(host_columns)},
    PRIMARY KEY (agent_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE metrics_host_1h (LIKE metrics_host_1m INCLUDING ALL) PARTITION BY RANGE (bucket);

CREATE TABLE metrics_gpu_1m (
    agent_id uuid NOT NULL,
    bucket timestamptz NOT NULL,
    gpu_index smallint NOT NULL,
    n integer NOT NULL,
    {_gauge_rollup_columns(gpu_columns)},
    PRIMARY KEY (agent_id, gpu_index, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE metrics_gpu_1h (LIKE metrics_gpu_1m INCLUDING ALL) PARTITION BY RANGE (bucket);

CREATE TABLE metrics_llm_1m (
    agent_id uuid NOT NULL,
    bucket timestamptz NOT NULL,
    provider text NOT NULL,
    model text NOT NULL,
    calls integer NOT NULL,
    errors integer NOT NULL,
    tokens_in bigint NOT NULL,
    tokens_out bigint NOT NULL,
    tokens_cached bigint NOT NULL,
    cost_usd double precision NOT NULL,
    latency_sum double precision NOT NULL,
    latency_n integer NOT NULL,
    {_hist_columns()},
    PRIMARY KEY (agent_id, bucket, provider, model)
) PARTITION BY RANGE (bucket);
CREATE TABLE metrics_llm_1h (LIKE metrics_llm_1m INCLUDING ALL) PARTITION BY RANGE (bucket);

-- Minutes that received samples since the last rollup run (written in the ingest
-- transaction, so a committed sample is always rolled up).
CREATE TABLE metrics_rollup_pending (
    source text NOT NULL,
    minute timestamptz NOT NULL,
    PRIMARY KEY (source, minute)
);
"""


def drop_sql() -> str:
    return """
DROP TABLE IF EXISTS metrics_rollup_pending, metrics_llm_1h, metrics_llm_1m, metrics_gpu_1h, metrics_gpu_1m,
    metrics_host_1h, metrics_host_1m, metrics_custom_sample, metrics_llm_call, metrics_gpu_sample,
    metrics_host_sample CASCADE;
"""
