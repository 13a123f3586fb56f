"""PulseGuard settings: everything comes from the environment.

Every variable is listed, with its default and meaning, in `.env.example` and the
README. A bad value stops the process at start-up with a message that names the
variable, rather than failing later in some request.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()


def _read(name: str, parse, default):
    """Parse one variable; on a bad value raise an error that names it."""
    try:
        return parse(name, default=default)
    except ImproperlyConfigured:
        raise
    except Exception as exc:  # django-environ raises ValueError/TypeError with no name
        raise ImproperlyConfigured(
            f"Environment variable {name} has an invalid value {env.str(name, '')!r}: {exc}"
        ) from exc


def env_bool(name: str, default: bool) -> bool:
    raw = env.str(name, default="").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"Environment variable {name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _read(name, env.int, default)
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"Environment variable {name} must be at least {minimum}, not {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    return [item.strip() for item in _read(name, env.list, default) if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Environment variable DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

if not env.str("DATABASE_URL", default=""):
    raise ImproperlyConfigured(
        "Environment variable DATABASE_URL is not set (e.g. postgres://user:pass@host:5432/pulseguard). "
        "`make run` and `make test` set it for you, starting an embedded PostgreSQL when it is unset."
    )
if not env.str("REDIS_URL", default=""):
    raise ImproperlyConfigured(
        "Environment variable REDIS_URL is not set (e.g. redis://host:6379/0). "
        "`make run` and `make test` set it for you, starting an embedded Redis when it is unset."
    )
DATABASES = {"default": _read("DATABASE_URL", env.db_url, None)}
if DATABASES["default"].get("ENGINE") not in {"django.db.backends.postgresql", "django_prometheus.db.backends.postgresql"}:
    raise ImproperlyConfigured("Environment variable DATABASE_URL must point at PostgreSQL (postgres://...)")
DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
# A psycopg connection pool per process. Under ASGI, Django's persistent connections
# (CONN_MAX_AGE) are per thread and pile up idle; a pool reuses a few for every thread.
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
    "min_size": 1,
    "max_size": env_int("PULSEGUARD_DB_POOL_SIZE", 10, minimum=1),
    "timeout": 10,
}
REDIS_URL = env.str("REDIS_URL")
REDIS_PREFIX = env.str("PULSEGUARD_REDIS_PREFIX", default="pg") or "pg"

# --- PulseGuard's own knobs -------------------------------------------------------------
PULSEGUARD_HEARTBEAT_INTERVAL = env_int("PULSEGUARD_HEARTBEAT_INTERVAL", 15, minimum=1)
PULSEGUARD_STALE_AFTER = env_int("PULSEGUARD_STALE_AFTER", 300, minimum=1)
if PULSEGUARD_STALE_AFTER <= 2 * PULSEGUARD_HEARTBEAT_INTERVAL:
    raise ImproperlyConfigured(
        "Environment variable PULSEGUARD_STALE_AFTER must be more than two heartbeat intervals "
        f"({2 * PULSEGUARD_HEARTBEAT_INTERVAL} s), not {PULSEGUARD_STALE_AFTER}"
    )
# How often beat runs the set-based silence check.
PULSEGUARD_STATUS_CHECK_EVERY = env_int("PULSEGUARD_STATUS_CHECK_EVERY", 5, minimum=1)
# Largest request body an agent may send (bytes); larger ones get a 413.
PULSEGUARD_MAX_BODY_BYTES = env_int("PULSEGUARD_MAX_BODY_BYTES", 1_048_576, minimum=1024)
# Telemetry batches (up to 5,000 samples) are bigger than other requests; gzip bodies may
# expand to at most this many bytes.
PULSEGUARD_MAX_METRICS_BODY_BYTES = env_int("PULSEGUARD_MAX_METRICS_BODY_BYTES", 8 * 1_048_576, minimum=1024)
PULSEGUARD_METRICS_MAX_BATCH = env_int("PULSEGUARD_METRICS_MAX_BATCH", 5_000, minimum=1)
# Retention, in days: raw samples and LLM calls; 1-minute rollups; 1-hour rollups.
PULSEGUARD_RETENTION_RAW_DAYS = env_int("PULSEGUARD_RETENTION_RAW_DAYS", 7, minimum=1)
PULSEGUARD_RETENTION_MINUTE_DAYS = env_int("PULSEGUARD_RETENTION_MINUTE_DAYS", 30, minimum=1)
PULSEGUARD_RETENTION_ROLLUP_DAYS = env_int("PULSEGUARD_RETENTION_ROLLUP_DAYS", 400, minimum=1)
PULSEGUARD_ROLLUP_EVERY = env_int("PULSEGUARD_ROLLUP_EVERY", 15, minimum=1)
# Tasks: modules that register extra skills (comma-separated dotted paths), and how often
# expired leases and timeouts are checked.
PULSEGUARD_SKILLS = env_list("PULSEGUARD_SKILLS", [])
PULSEGUARD_TASK_EXPIRE_EVERY = env_int("PULSEGUARD_TASK_EXPIRE_EVERY", 5, minimum=1)
# Seconds between dispatcher runs for Celery-run tasks (new tasks are dispatched at once;
# this catches retries whose backoff ended and GPU tasks waiting for room).
PULSEGUARD_DISPATCH_EVERY = env_int("PULSEGUARD_DISPATCH_EVERY", 2, minimum=1)
# The Celery queue CPU tasks go to (GPU tasks go to gpu.<worker>.<index>).
PULSEGUARD_CPU_QUEUE = env.str("PULSEGUARD_CPU_QUEUE", default="cpu") or "cpu"
# Circuit breaker per agent: this many failed attempts in a row open it (no work) for the
# cooldown in seconds; then one trial attempt decides.
PULSEGUARD_BREAKER_FAILURES = env_int("PULSEGUARD_BREAKER_FAILURES", 5, minimum=1)
PULSEGUARD_BREAKER_COOLDOWN = env_int("PULSEGUARD_BREAKER_COOLDOWN", 300, minimum=1)
# A browser gets at most one frame per this many milliseconds, however large the fleet.
PULSEGUARD_LIVE_COALESCE_MS = env_int("PULSEGUARD_LIVE_COALESCE_MS", 250, minimum=10)
PULSEGUARD_LOG_FORMAT = env.str("PULSEGUARD_LOG_FORMAT", default="console" if DEBUG else "json").lower()
if PULSEGUARD_LOG_FORMAT not in {"console", "json"}:
    raise ImproperlyConfigured(
        f"Environment variable PULSEGUARD_LOG_FORMAT must be 'console' or 'json', not {PULSEGUARD_LOG_FORMAT!r}"
    )
PULSEGUARD_LOG_LEVEL = env.str("PULSEGUARD_LOG_LEVEL", default="INFO").upper()
if PULSEGUARD_LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
    raise ImproperlyConfigured(
        f"Environment variable PULSEGUARD_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {PULSEGUARD_LOG_LEVEL!r}"
    )
# Prometheus: when set, /metrics wants `Authorization: Bearer <this>`.
PULSEGUARD_METRICS_TOKEN = env.str("PULSEGUARD_METRICS_TOKEN", default="")

# --- Django -----------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_prometheus",
    "django_celery_beat",
    "channels",
    "apps.core",
    "apps.security",
    "apps.agents",
    "apps.metrics",
    "apps.workflows",
    "apps.dashboard",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "apps.core.middleware.RequestIdMiddleware",
    "apps.core.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.core.middleware.BodySizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "pulseguard.urls"
ASGI_APPLICATION = "pulseguard.asgi.application"
WSGI_APPLICATION = "pulseguard.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.security.context_processors.roles",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads it to send X-CSRFToken
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("DJANGO_BEHIND_TLS_PROXY", False) else None
X_FRAME_OPTIONS = "DENY"
# BodySizeLimitMiddleware applies the per-path limits; Django's own check is the larger one.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(PULSEGUARD_MAX_BODY_BYTES, PULSEGUARD_MAX_METRICS_BODY_BYTES)

# --- Caches, channels, Celery (all on Redis) --------------------------------------------
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_PREFIX,
    }
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": f"{REDIS_PREFIX}:live",
        },
    }
}
CELERY_BROKER_URL = REDIS_URL
# Deployments sharing one Redis database stay apart: queues get the prefix too.
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_PREFIX}:celery:"}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_DEFAULT_QUEUE = PULSEGUARD_CPU_QUEUE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The "restart" command of a worker node restarts its pool (celery_worker/node.py).
CELERY_WORKER_POOL_RESTARTS = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# The schedule as data; django-celery-beat syncs it into its tables on start.
CELERY_BEAT_SCHEDULE = {
    "agents-check-heartbeats": {
        "task": "apps.agents.tasks.agents_check_heartbeats",
        "schedule": float(PULSEGUARD_STATUS_CHECK_EVERY),
        "options": {"expires": float(PULSEGUARD_STATUS_CHECK_EVERY)},
    },
    "metrics-rollup": {
        "task": "apps.metrics.tasks.metrics_rollup",
        "schedule": float(PULSEGUARD_ROLLUP_EVERY),
        "options": {"expires": float(PULSEGUARD_ROLLUP_EVERY)},
    },
    "workflows-dispatch-tasks": {
        "task": "apps.workflows.tasks.tasks_dispatch",
        "schedule": float(PULSEGUARD_DISPATCH_EVERY),
        "options": {"expires": float(PULSEGUARD_DISPATCH_EVERY)},
    },
    "workflows-expire-tasks": {
        "task": "apps.workflows.tasks.tasks_expire",
        "schedule": float(PULSEGUARD_TASK_EXPIRE_EVERY),
        "options": {"expires": float(PULSEGUARD_TASK_EXPIRE_EVERY)},
    },
    # Partitions for the days ahead, and whole old partitions dropped (retention).
    "metrics-partitions": {
        "task": "apps.metrics.tasks.metrics_partitions_maintain",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
}

# --- API --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.security.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.security.permissions.IsViewer"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PulseGuard API",
    "DESCRIPTION": "Control plane for fleets of AI agents and the CPU/GPU workers they run on.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "AgentStateEnum": "apps.agents.choices.AgentState",
        "TaskStateEnum": "apps.workflows.choices.TaskState",
    },
    # Swagger UI served from our own static files: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "enrollmentKey": {"type": "http", "scheme": "bearer", "description": "Enrollment key (pge_…)"},
            "agentToken": {"type": "http", "scheme": "bearer", "description": "Agent token (pga_…)"},
        }
    },
}

# --- Logging: structlog, JSON in production, readable in development --------------------
from pulseguard.logging import build_logging_config  # noqa: E402

LOGGING = build_logging_config(fmt=PULSEGUARD_LOG_FORMAT, level=PULSEGUARD_LOG_LEVEL)
