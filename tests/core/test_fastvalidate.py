"""The compiled check never accepts what DRF refuses, and gives DRF's validated data."""

import json
import random

import pytest

from apps.agents.api.serializers import HeartbeatInputSerializer, RegisterInputSerializer
from apps.core.fastvalidate import compile_serializer

check = compile_serializer(HeartbeatInputSerializer)

NUMBERS = [0, 1, -1, 0.5, 99.9, 100, 100.5, 150, 10**12, -(10**12), 600_000, 600_001, True, False, None, "5", "x", [], {}]
STATES = ["idle", "busy", "draining", "asleep", "", 3, None]


def _random_body(rng: random.Random):
    body = {}
    if rng.random() < 0.8:
        body["state"] = rng.choice(STATES)
    if rng.random() < 0.7:
        readings = {}
        for key in ["cpu_percent", "load1", "memory_used_bytes", "memory_total_bytes"]:
            if rng.random() < 0.6:
                readings[key] = rng.choice(NUMBERS)
        if rng.random() < 0.4:
            readings["gpus"] = [
                {k: rng.choice(NUMBERS) for k in rng.sample(
                    ["index", "utilization_percent", "memory_used_bytes", "memory_total_bytes", "temperature_c", "power_w"],
                    rng.randint(0, 6))}
                for _ in range(rng.choice([0, 1, 2, 65]))
            ]
        if rng.random() < 0.05:
            readings["disk"] = 1
        body["readings"] = readings if rng.random() < 0.95 else rng.choice([None, [], "r"])
    if rng.random() < 0.5:
        body["latency_ms"] = rng.choice(NUMBERS)
    if rng.random() < 0.05:
        body["status"] = "online"
    return body if rng.random() < 0.98 else rng.choice([[], "x", None, 1])


def test_fast_acceptance_agrees_with_drf_on_thousands_of_bodies():
    rng = random.Random(20261122)
    accepted = 0
    for _ in range(4000):
        body = json.loads(json.dumps(_random_body(rng)))
        fast = check(body)
        if fast is None:
            continue
        accepted += 1
        drf = HeartbeatInputSerializer(data=body)
        assert drf.is_valid(), (body, drf.errors)
        assert json.dumps(fast, sort_keys=True) == json.dumps(drf.validated_data, sort_keys=True), body
    assert accepted > 300  # the fast path really is taken for ordinary bodies


@pytest.mark.parametrize(
    "body",
    [
        {"state": "busy", "readings": {"cpu_percent": 41.5, "memory_used_bytes": 1, "memory_total_bytes": 2}},
        {},
        {"readings": {"gpus": [{"index": 0, "utilization_percent": 97, "temperature_c": 81.5}]}, "latency_ms": 12},
    ],
)
def test_ordinary_heartbeats_take_the_fast_path_with_drfs_result(body):
    drf = HeartbeatInputSerializer(data=body)
    assert drf.is_valid()
    assert check(body) == drf.validated_data


def test_a_serializer_with_fields_it_does_not_know_is_never_fast():
    assert compile_serializer(RegisterInputSerializer)({"name": "a"}) is None


def test_non_finite_numbers_are_left_to_drf():
    assert check({"latency_ms": float("nan")}) is None
    assert check({"readings": {"cpu_percent": float("inf")}}) is None
