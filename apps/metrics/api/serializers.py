"""Serializers of the metrics API: query parameters in, documented shapes out.

Ingest validation is apps/metrics/validation.py (fast, per-sample errors); the sample
serializers here document the body in OpenAPI.
"""

from rest_framework import serializers

from apps.agents.api.serializers import StrictSerializer


class _Sample(serializers.Serializer):
    ts = serializers.CharField(help_text="RFC 3339 time or Unix seconds")


class HostSampleSerializer(_Sample):
    kind = serializers.ChoiceField(choices=["host"])
    cpu_percent = serializers.FloatField(required=False, min_value=0, max_value=100)
    load1 = serializers.FloatField(required=False, min_value=0)
    load5 = serializers.FloatField(required=False, min_value=0)
    load15 = serializers.FloatField(required=False, min_value=0)
    memory_used_bytes = serializers.IntegerField(required=False, min_value=0)
    memory_total_bytes = serializers.IntegerField(required=False, min_value=0)
    disk_used_bytes = serializers.IntegerField(required=False, min_value=0)
    disk_total_bytes = serializers.IntegerField(required=False, min_value=0)
    disk_read_bytes_per_s = serializers.FloatField(required=False, min_value=0)
    disk_write_bytes_per_s = serializers.FloatField(required=False, min_value=0)
    net_rx_bytes_per_s = serializers.FloatField(required=False, min_value=0)
    net_tx_bytes_per_s = serializers.FloatField(required=False, min_value=0)


class GpuProcessSerializer(serializers.Serializer):
    pid = serializers.IntegerField()
    name = serializers.CharField(required=False)
    used_memory_bytes = serializers.IntegerField(required=False)


class GpuSampleSerializer(_Sample):
    kind = serializers.ChoiceField(choices=["gpu"])
    index = serializers.IntegerField(min_value=0, max_value=255)
    utilization_percent = serializers.FloatField(required=False, help_text="DCGM_FI_DEV_GPU_UTIL")
    memory_util_percent = serializers.FloatField(required=False, help_text="DCGM_FI_DEV_MEM_COPY_UTIL")
    memory_used_bytes = serializers.IntegerField(required=False, help_text="DCGM_FI_DEV_FB_USED (bytes)")
    memory_free_bytes = serializers.IntegerField(required=False, help_text="DCGM_FI_DEV_FB_FREE (bytes)")
    memory_total_bytes = serializers.IntegerField(required=False, help_text="DCGM_FI_DEV_FB_TOTAL (bytes)")
    temperature_c = serializers.FloatField(required=False, help_text="DCGM_FI_DEV_GPU_TEMP")
    power_w = serializers.FloatField(required=False, help_text="DCGM_FI_DEV_POWER_USAGE")
    power_limit_w = serializers.FloatField(required=False, help_text="DCGM_FI_DEV_POWER_MGMT_LIMIT")
    sm_clock_mhz = serializers.FloatField(required=False, help_text="DCGM_FI_DEV_SM_CLOCK")
    mem_clock_mhz = serializers.FloatField(required=False, help_text="DCGM_FI_DEV_MEM_CLOCK")
    energy_mj = serializers.FloatField(required=False, help_text="DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    ecc_sbe_total = serializers.IntegerField(required=False, help_text="DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")
    ecc_dbe_total = serializers.IntegerField(required=False, help_text="DCGM_FI_DEV_ECC_DBE_VOL_TOTAL")
    xid_errors = serializers.IntegerField(required=False, help_text="DCGM_FI_DEV_XID_ERRORS (count)")
    processes = GpuProcessSerializer(many=True, required=False)


class LlmCallSerializer(_Sample):
    kind = serializers.ChoiceField(choices=["llm"])
    provider = serializers.CharField(max_length=64)
    model = serializers.CharField(max_length=128)
    operation = serializers.CharField(required=False, max_length=32, help_text="chat, completion, embedding, ...")
    tokens_in = serializers.IntegerField(required=False, help_text="All prompt tokens, cached ones included")
    tokens_out = serializers.IntegerField(required=False)
    tokens_cached = serializers.IntegerField(required=False)
    latency_ms = serializers.FloatField(required=False)
    ttft_ms = serializers.FloatField(required=False, help_text="Time to first token")
    status = serializers.ChoiceField(choices=["ok", "error"], required=False)
    error_type = serializers.CharField(required=False, help_text="timeout, rate_limit, server_error, ...")
    cost_usd = serializers.FloatField(required=False, help_text="Omit to use the price table")
    session_id = serializers.CharField(required=False)
    workflow_id = serializers.CharField(required=False)
    task_id = serializers.CharField(required=False)


class CustomSampleSerializer(_Sample):
    kind = serializers.ChoiceField(choices=["custom"])
    name = serializers.CharField(max_length=100)
    type = serializers.ChoiceField(choices=["gauge", "counter"], required=False)
    value = serializers.FloatField()
    labels = serializers.DictField(child=serializers.CharField(), required=False)


class MetricsBatchSerializer(serializers.Serializer):
    samples = serializers.ListField(child=serializers.DictField(), max_length=5000,
                                    help_text="Samples of kind host, gpu, llm or custom (see the sample schemas)")


class MetricsAcceptedSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    by_kind = serializers.DictField(child=serializers.IntegerField())


class QueryInputSerializer(StrictSerializer):
    metric = serializers.CharField(max_length=200)
    agent = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=200)
    label = serializers.ListField(child=serializers.CharField(max_length=300), required=False, max_length=20)
    to = serializers.DateTimeField(required=False)
    step = serializers.IntegerField(required=False, min_value=1, max_value=31 * 86400)
    agg = serializers.ChoiceField(choices=["avg", "min", "max", "sum"], required=False)
    group_by = serializers.ChoiceField(choices=["agent", "fleet"], default="agent")

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(required=False)  # a Python keyword
        return fields


class UsageInputSerializer(StrictSerializer):
    agent = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=200)
    label = serializers.ListField(child=serializers.CharField(max_length=300), required=False, max_length=20)
    to = serializers.DateTimeField(required=False)
    group_by = serializers.ChoiceField(choices=["model", "provider", "agent", "day"], default="model")
    provider = serializers.CharField(required=False, max_length=64)
    model = serializers.CharField(required=False, max_length=128)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(required=False)
        return fields


class SeriesSerializer(serializers.Serializer):
    agent = serializers.UUIDField(allow_null=True)
    agent_name = serializers.CharField()
    device = serializers.IntegerField(allow_null=True)
    points = serializers.ListField(child=serializers.ListField(), help_text="[[unix seconds, value or null], ...]")


class QueryOutputSerializer(serializers.Serializer):
    metric = serializers.CharField()
    unit = serializers.CharField()
    agg = serializers.CharField()
    step = serializers.IntegerField()
    resolution = serializers.ChoiceField(choices=["raw", "1m", "1h"])
    series = SeriesSerializer(many=True)


class UsageRowSerializer(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()
    calls = serializers.IntegerField()
    errors = serializers.IntegerField()
    error_rate = serializers.FloatField()
    tokens_in = serializers.IntegerField()
    tokens_out = serializers.IntegerField()
    tokens_cached = serializers.IntegerField()
    cost_usd = serializers.FloatField()
    latency_avg_ms = serializers.FloatField(allow_null=True)
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)


class UsageOutputSerializer(serializers.Serializer):
    group_by = serializers.CharField()
    resolution = serializers.CharField()
    totals = UsageRowSerializer()
    groups = UsageRowSerializer(many=True)


class CatalogEntrySerializer(serializers.Serializer):
    name = serializers.CharField()
    source = serializers.CharField()
    unit = serializers.CharField()
    kind = serializers.CharField()
    description = serializers.CharField()
