"""Probes for orchestrators: /healthz says the process is up, /readyz that its backends answer."""

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt


@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["postgresql"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["postgresql"] = f"error: {exc.__class__.__name__}"
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {exc.__class__.__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


@csrf_exempt  # an API client's POST to a wrong path deserves a 404, not a CSRF 403
def not_found(request, exception=None):
    """JSON for API clients, the normal page for people."""
    if request.path.startswith("/api/"):
        from apps.core.errors import error_body

        return JsonResponse(error_body("not_found", f"No such endpoint or object: {request.path}"), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)
