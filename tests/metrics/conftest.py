from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.metrics.pricing import prices_forget
from tests.conftest import register


@pytest.fixture(autouse=True)
def _fresh_prices():
    prices_forget()
    yield
    prices_forget()


@pytest.fixture
def two_agents(enrollment_key):
    a, ta = register(enrollment_key, "trainer-1", labels={"team": "ml"})
    b, tb = register(enrollment_key, "chatbot-1", labels={"team": "support"})
    return (a, ta), (b, tb)


def iso(ts):
    return ts.isoformat()


def minutes_ago(n, seconds=0):
    return timezone.now().replace(microsecond=0) - timedelta(minutes=n, seconds=seconds)


def count(table, **where):
    sql = f"SELECT count(*) FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(f"{k} = %s" for k in where)
    with connection.cursor() as cur:
        cur.execute(sql, list(where.values()))
        return cur.fetchone()[0]


def rows(sql, params=()):
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()
