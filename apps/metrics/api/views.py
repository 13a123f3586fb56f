"""Metrics API: thin adapters over apps.metrics.services / selectors."""

import zlib

import orjson

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from prometheus_client import Counter
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.agents.authentication import AgentTokenAuthentication, IsThisAgent
from apps.core.errors import ApplicationError
from apps.metrics import catalog, selectors, services
from apps.metrics.api import serializers as s
from apps.security.permissions import IsViewer

ERRORS = {400: dict, 401: dict, 403: dict}

SAMPLES = Counter("pulseguard_metrics_samples", "Telemetry samples written, by kind", ["kind"])
BATCHES = Counter("pulseguard_metrics_batches", "Telemetry batches answered, by outcome", ["outcome"])


class RawBodyParser(BaseParser):
    """Hands the view the bytes: it decompresses and parses them itself (see below)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read() if stream is not None else b""


def _decode_batch(request) -> object:
    body = request.body
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    limit = settings.PULSEGUARD_MAX_METRICS_BODY_BYTES
    if encoding == "gzip":
        # Bounded inflate: a small body must not expand into gigabytes (a gzip bomb).
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise ApplicationError("The body is not valid gzip", code="malformed_body") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise ApplicationError(f"The decompressed body is larger than {limit} bytes", code="body_too_large",
                                   status_code=413)
    elif encoding not in ("identity", ""):
        raise ApplicationError(f"Content-Encoding {encoding!r} is not supported: use gzip", code="unsupported_encoding",
                               status_code=415)
    try:
        data = orjson.loads(body)  # ~4x the standard library on big batches; refuses NaN
    except orjson.JSONDecodeError as exc:
        raise ApplicationError(f"The body is not JSON: {exc}", code="malformed_json") from None
    if not isinstance(data, dict) or set(data) != {"samples"}:
        raise ApplicationError('The body is {"samples": [...]}', code="invalid_samples",
                               fields={"samples": [{"index": None, "field": None, "reason": 'expected {"samples": [...]}'}]})
    return data["samples"]


class AgentMetricsApi(APIView):
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsThisAgent]
    parser_classes = [RawBodyParser]

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="TelemetrySample",
            serializers=[s.HostSampleSerializer, s.GpuSampleSerializer, s.LlmCallSerializer, s.CustomSampleSerializer],
            resource_type_field_name="kind",
            many=True,
        ),
        responses={200: s.MetricsAcceptedSerializer, 413: dict, 415: dict, **ERRORS},
        auth=[{"agentToken": []}],
        summary="Send a batch of telemetry samples (host, GPU, LLM calls, custom); gzip welcome",
        description="Body: `{\"samples\": [...]}`, up to 5,000 samples, all written or none. See docs/telemetry.md.",
    )
    def post(self, request, agent_id):
        try:
            samples = _decode_batch(request)
            counts = services.metrics_ingest(agent_id=agent_id, samples=samples)
        except ApplicationError as exc:
            BATCHES.labels(exc.code).inc()
            raise
        BATCHES.labels("accepted").inc()
        for kind, n in counts.items():
            if n:
                SAMPLES.labels(kind).inc(n)
        return Response({"accepted": sum(counts.values()), "by_kind": counts})


def _labels(values) -> dict:
    labels = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not key:
            raise ApplicationError("label is key=value or key", code="invalid_filter", fields={"label": ["key=value or key."]})
        labels[key] = value if sep else None
    return labels


_QUERY_PARAMS = [
    OpenApiParameter("metric", str, required=True, description="A name from /api/v1/metrics/catalog, or custom.<name>"),
    OpenApiParameter("agent", str, many=True, description="Agent id; repeat for several"),
    OpenApiParameter("label", str, many=True, description="key=value (or key): agents with that label"),
    OpenApiParameter("from", str, description="RFC 3339; default: an hour before `to`"),
    OpenApiParameter("to", str, description="RFC 3339; default: now"),
    OpenApiParameter("step", int, description="Seconds per bucket; default: a round step giving ~360 points"),
    OpenApiParameter("agg", str, enum=["avg", "min", "max", "sum"]),
    OpenApiParameter("group_by", str, enum=["agent", "fleet"]),
]


class MetricsQueryApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(parameters=_QUERY_PARAMS, responses={200: s.QueryOutputSerializer, **ERRORS},
                   summary="Time series of one metric, bucketed")
    def get(self, request):
        data = s.QueryInputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        result = selectors.series_query(
            metric=v["metric"], start=v.get("from"), end=v.get("to"), step=v.get("step"), agg=v.get("agg"),
            agent_ids=v.get("agent"), labels=_labels(v.get("label")), group_by=v["group_by"],
        )
        return Response(result.as_dict())


class LlmUsageApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(
        parameters=[
            OpenApiParameter("from", str, description="RFC 3339; default: a day before `to`"),
            OpenApiParameter("to", str, description="RFC 3339; default: now"),
            OpenApiParameter("group_by", str, enum=["model", "provider", "agent", "day"]),
            OpenApiParameter("agent", str, many=True), OpenApiParameter("label", str, many=True),
            OpenApiParameter("provider", str), OpenApiParameter("model", str),
        ],
        responses={200: s.UsageOutputSerializer, **ERRORS},
        summary="LLM calls, tokens, error rate, latency percentiles and cost, grouped",
    )
    def get(self, request):
        data = s.UsageInputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        return Response(selectors.llm_usage(
            start=v.get("from"), end=v.get("to"), group_by=v["group_by"], agent_ids=v.get("agent"),
            labels=_labels(v.get("label")), provider=v.get("provider"), model=v.get("model"),
        ))


class MetricsCatalogApi(APIView):
    permission_classes = [IsViewer]

    @extend_schema(responses={200: s.CatalogEntrySerializer(many=True)}, summary="Every metric that can be queried")
    def get(self, request):
        return Response([
            {"name": m.name, "source": m.source, "unit": m.unit, "kind": m.kind, "description": m.description}
            for m in catalog.METRICS.values()
        ])
