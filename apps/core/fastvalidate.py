"""A DRF serializer's own rules, compiled into a fast accept-only check for hot paths.

DRF validates a small heartbeat in ~240 µs; this check does it in a few. It reads the
field definitions from the serializer class, so the rules live in one place, and it only
ever *accepts*: on anything it is not certain of (a string where a number goes, an
unknown field, a value out of range, a field type it does not know) it answers None and
the caller asks the real serializer, which decides and words the error. What it accepts
DRF accepts too, with the same validated data (tests/core/test_fastvalidate.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rest_framework import serializers
from rest_framework.fields import empty

Check = Callable[[Any], Any]
_UNSURE = object()


def compile_serializer(serializer_class: type[serializers.Serializer]) -> Callable[[Any], dict | None]:
    """check(data) -> validated data (as DRF would give it), or None: ask DRF."""
    try:
        check = _compile(serializer_class())
    except _Unsupported:
        return lambda data: None

    def run(data):
        result = check(data)
        return None if result is _UNSURE else result

    return run


class _Unsupported(Exception):
    pass


def _compile(field) -> Check:
    if isinstance(field, (serializers.ListSerializer, serializers.ListField)):
        return _compile_list(field)
    if isinstance(field, serializers.Serializer):
        return _compile_object(field)
    if isinstance(field, serializers.ChoiceField):
        choices = {key for key in field.choices if isinstance(key, str)}
        return lambda v: v if type(v) is str and v in choices else _UNSURE
    if isinstance(field, serializers.FloatField):
        return _number(field, (int, float), float)
    if isinstance(field, serializers.IntegerField):
        return _number(field, (int,), int)
    raise _Unsupported(type(field).__name__)


def _number(field, types: tuple, cast) -> Check:
    low, high = field.min_value, field.max_value

    def check(v):
        if type(v) not in types or not math.isfinite(v):
            return _UNSURE
        if (low is not None and v < low) or (high is not None and v > high):
            return _UNSURE
        return cast(v)

    return check


def _compile_list(field) -> Check:
    """A ListSerializer (many=True) or a ListField of a supported child."""
    child = _compile(field.child)
    longest = field.max_length
    if field.min_length or not field.allow_empty:
        raise _Unsupported("list length rules")

    def check(v):
        if type(v) is not list or (longest is not None and len(v) > longest):
            return _UNSURE
        out = []
        for item in v:
            value = child(item)
            if value is _UNSURE:
                return _UNSURE
            out.append(value)
        return out

    return check


def _compile_object(serializer: serializers.Serializer) -> Check:
    cls = type(serializer)
    if cls.validate is not serializers.Serializer.validate or any(
        hasattr(cls, f"validate_{name}") for name in serializer.fields
    ):
        raise _Unsupported("custom validation")
    fields = []
    for name, field in serializer.fields.items():
        if field.read_only or field.source != name or field.validators and not _only_range_validators(field):
            raise _Unsupported(name)
        fields.append((name, _compile(field), field.required, field.default, field.allow_null))
    known = {name for name, *_ in fields}

    def check(v):
        if type(v) is not dict or not known.issuperset(v):
            return _UNSURE
        out = {}
        for name, child, required, default, allow_null in fields:
            if name not in v:
                if required:
                    return _UNSURE
                if default is not empty:
                    out[name] = default() if callable(default) else default
                continue
            value = v[name]
            if value is None:
                if not allow_null:
                    return _UNSURE
                out[name] = None
                continue
            value = child(value)
            if value is _UNSURE:
                return _UNSURE
            out[name] = value
        return out

    return check


def _only_range_validators(field) -> bool:
    """Validators the compiled check applies itself: value ranges, and a list's maximum
    length (a ListField's max_length becomes a MaxLengthValidator)."""
    from django.core.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator

    allowed = (MinValueValidator, MaxValueValidator)
    if isinstance(field, serializers.ListField):
        allowed += (MaxLengthValidator,)
    return all(isinstance(v, allowed) for v in field.validators)
