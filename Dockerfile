# PulseGuard: one image for the web server (uvicorn), Celery workers, Celery beat and
# one-off `manage.py` commands. Runtime dependencies only (requirements.txt).
#
#   docker build -t pulseguard .
#   docker run --env-file prod.env -p 8000:8000 pulseguard   # web; needs DATABASE_URL, REDIS_URL,
#                                                            # DJANGO_SECRET_KEY (docker-compose.yml)
#
# Configuration comes from the environment at run time: docs/configuration.md.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the pinned runtime dependencies, installed into a virtualenv ----------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Only requirements.txt: this layer is rebuilt when the dependencies change, not the code.
# Every pin ships manylinux wheels (x86_64 and aarch64), so no compiler is needed here.
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt


# --- runtime: the virtualenv, the code and the collected static files; no build tools -----
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=pulseguard.settings

RUN groupadd --system --gid "${APP_GID}" pulseguard \
 && useradd --system --uid "${APP_UID}" --gid pulseguard \
        --create-home --home-dir /home/pulseguard --shell /usr/sbin/nologin pulseguard

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# The code stays owned by root: the app user can read it, not change it. What is copied is
# filtered by .dockerignore (no .env, .venv, var/, tests, ...).
COPY . .

# Settings refuse to load without these; collectstatic needs neither a database nor Redis,
# so placeholders do (they are not kept in the image's environment). DJANGO_DEBUG is off,
# so files are hashed and compressed for whitenoise's manifest storage.
RUN DJANGO_SECRET_KEY=collectstatic-only \
    DATABASE_URL=postgres://build:build@build.invalid:5432/build \
    REDIS_URL=redis://build.invalid:6379/0 \
    python manage.py collectstatic --noinput --verbosity 0 \
 && python -m compileall -q /app

# Numeric, so orchestrators can verify runAsNonRoot without reading /etc/passwd.
USER ${APP_UID}:${APP_GID}

EXPOSE 8000

# /healthz answers as soon as the process serves requests; /readyz (also checks PostgreSQL
# and Redis) is what docker-compose.yml and load balancers use for readiness.
# Worker and beat containers override this check (docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "/healthz"]

# --proxy-headers: X-Forwarded-For/-Proto are honoured from the addresses in
# FORWARDED_ALLOW_IPS (uvicorn's own variable; default 127.0.0.1,::1). WEB_CONCURRENCY sets
# uvicorn's process count (default 1). Django answers no ASGI lifespan events: turned off.
CMD ["uvicorn", "pulseguard.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--proxy-headers", "--lifespan", "off", "--timeout-graceful-shutdown", "20"]
