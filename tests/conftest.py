"""Shared fixtures. Everything runs against real PostgreSQL and Redis (see scripts/devstack.py)."""

import os

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from apps.agents import services as agent_services
from apps.security.roles import Role
from apps.security.services import api_token_create


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """A test database per pytest process, so two runs on one PostgreSQL never collide."""
    from django.conf import settings

    default = settings.DATABASES["default"]
    default.setdefault("TEST", {})["NAME"] = f"test_{default['NAME']}_{os.getpid()}"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Same algorithm as production, far fewer rounds: making users costs nothing. Live
    servers read the rounds from the hash, so they accept these passwords too."""
    settings.PASSWORD_HASHERS = ["tests.e2e.support.FastPBKDF2PasswordHasher"]


def metrics_tables_truncate() -> None:
    """Empty the telemetry tables: plain SQL tables, not Django models, so the flush that
    ends a transactional test leaves them full."""
    from django.db import connection

    from apps.metrics.schema import PARTITIONED

    with connection.cursor() as cur:
        cur.execute(f"TRUNCATE {', '.join([*PARTITIONED, 'metrics_rollup_pending'])}")


@pytest.fixture(autouse=True)
def _telemetry_tables_clean(request):
    """After a transactional test, no samples are left for the next one to see."""
    yield
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or (marker is not None and marker.kwargs.get("transaction"))
    if transactional:
        django_db_blocker = request.getfixturevalue("django_db_blocker")
        with django_db_blocker.unblock():
            metrics_tables_truncate()


def make_user(username: str, role: Role | None):
    user = get_user_model().objects.create_user(username=username, password="pw-" + username)
    if role is not None:
        user.groups.add(Group.objects.get(name=role.group_name))
    return user


@pytest.fixture
def viewer(db):
    return make_user("vera-viewer", Role.VIEWER)


@pytest.fixture
def operator(db):
    return make_user("oscar-operator", Role.OPERATOR)


@pytest.fixture
def admin_user(db):
    return make_user("ada-admin", Role.ADMIN)


@pytest.fixture
def nobody(db):
    """A user with an account but no role."""
    return make_user("nora-norole", None)


def token_client(user) -> APIClient:
    _, raw = api_token_create(username=user.username, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def viewer_api(viewer):
    return token_client(viewer)


@pytest.fixture
def operator_api(operator):
    return token_client(operator)


@pytest.fixture
def anon_api():
    return APIClient()


@pytest.fixture
def enrollment_key(db):
    _, raw = agent_services.enrollment_key_create(name="test-key")
    return raw


def register(enrollment_key: str, name: str = "agent-1", **overrides):
    fields = dict(
        kind="agent", capabilities=["llm", "python"], labels={"team": "core", "region": "eu"}, version="1.0",
        host={"hostname": f"{name}.local", "os": "Linux", "cpu_count": 8, "memory_total_bytes": 32 * 2**30, "gpus": []},
        model="gpt-4o", provider="openai",
    )
    fields.update(overrides)
    return agent_services.agent_register(enrollment_key=enrollment_key, name=name, **fields)


@pytest.fixture
def agent_and_token(enrollment_key):
    return register(enrollment_key)


def agent_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client
