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


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@register.filter
def percent_of(part, whole):
    """used|percent_of:total → 0–100 (0 when either is missing)."""
    part, whole = _float(part), _float(whole)
    return 100.0 * part / whole if part is not None and whole else 0


@register.filter
def compact(value):
    """1234 → '1.2k', 5600000 → '5.6M' (token and call counts)."""
    v = _float(value)
    if v is None:
        return "—"
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= limit:
            scaled = v / limit
            return f"{scaled:.1f}{suffix}" if abs(scaled) < 100 else f"{scaled:.0f}{suffix}"
    return f"{v:.0f}" if v == int(v) or abs(v) >= 10 else f"{v:.1f}"


@register.filter
def intcomma_int(value):
    v = _float(value)
    return "—" if v is None else f"{v:,.0f}"


@register.filter
def usd(value):
    """Dollars with the precision a number that size needs: $1,234 · $12.34 · $0.0042."""
    v = _float(value)
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"${v:,.0f}"
    if abs(v) >= 0.1 or v == 0:
        return f"${v:,.2f}"
    return f"${v:.4f}" if abs(v) >= 0.0001 else "< $0.0001"


@register.filter
def latency(ms):
    v = _float(ms)
    if v is None:
        return "—"
    return f"{v:.0f} ms" if v < 1000 else f"{v / 1000:.1f} s"


@register.filter
def rate(fraction):
    """0.0123 → '1.2%'."""
    v = _float(fraction)
    if v is None:
        return "—"
    v *= 100
    return f"{v:.0f}%" if v >= 10 or v == 0 else f"{v:.1f}%"


@register.filter
def temp_class(celsius):
    from apps.dashboard.telemetry import HOT_C, WARM_C

    v = _float(celsius)
    if v is None:
        return ""
    return "hot" if v >= HOT_C else "warm" if v >= WARM_C else ""


@register.simple_tag
def trend(change, good="none"):
    """A small '▲ 12%' against the previous window; coloured when `good` says which way
    is good ("up" or "down"), neutral otherwise."""
    from django.utils.html import format_html
    from django.utils.safestring import mark_safe

    if change is None:
        return mark_safe('<span class="trend trend-none">no earlier data</span>')
    if abs(change) < 0.5:
        return mark_safe('<span class="trend trend-flat">≈ same as before</span>')
    up = change > 0
    tone = "neutral" if good not in ("up", "down") else "good" if up == (good == "up") else "bad"
    return format_html('<span class="trend trend-{}">{} {}%</span> <span class="trend-note">vs previous</span>',
                       tone, "▲" if up else "▼", f"{abs(change):.0f}")


@register.filter
def kilo(value):
    v = _float(value)
    return v / 1000 if v is not None else None


@register.inclusion_tag("dashboard/partials/dispatch_banner.html")
def dispatch_banner():
    """The banner every page shows while an operator has paused dispatch. The answer is
    cached per process for at most 2 s (controls.dispatch_paused), so it costs nothing."""
    from apps.workflows.controls import dispatch_paused, fleet_control_get

    return {"control": fleet_control_get() if dispatch_paused() else None}


@register.filter
def seconds_between(end, start):
    """finished_at|seconds_between:started_at → seconds (None when either is missing)."""
    if not end or not start:
        return None
    return (end - start).total_seconds()


@register.filter
def span(seconds):
    """4.2 → '4.2 s', 754 → '12 min 34 s', 9000 → '2 h 30 min'."""
    v = _float(seconds)
    if v is None:
        return "—"
    if v < 10:
        return f"{v:.1f} s"
    v = int(v)
    if v < 120:
        return f"{v} s"
    if v < 3600:
        return f"{v // 60} min" + (f" {v % 60} s" if v % 60 else "")
    if v < 172800:
        return f"{v // 3600} h {v % 3600 // 60} min"
    return f"{v // 86400} d {v % 86400 // 3600} h"


@register.filter
def pretty_json(value):
    import json

    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True, default=str)
