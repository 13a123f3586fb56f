from django import template

register = template.Library()

_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


@register.filter
def bytes(value):
    """1073741824 → '1 GiB' (binary units, as operators read memory sizes)."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return "—"
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if size >= 10 or unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "—"


@register.filter
def mem_percent(readings):
    try:
        return 100.0 * readings["memory_used_bytes"] / readings["memory_total_bytes"]
    except (KeyError, TypeError, ZeroDivisionError):
        return 0


@register.filter
def duration(seconds):
    """300 → '5 min'."""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
