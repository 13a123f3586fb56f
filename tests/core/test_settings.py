"""A bad configuration stops the process at start-up with a message naming the variable."""

import os
import subprocess
import sys

import pytest


def _start(**env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PULSEGUARD_", "DJANGO_"))}
    environment.update({"DJANGO_SETTINGS_MODULE": "pulseguard.settings", "DJANGO_DEBUG": "true"}, **env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=environment, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "variable, value",
    [
        ("PULSEGUARD_HEARTBEAT_INTERVAL", "fast"),
        ("PULSEGUARD_HEARTBEAT_INTERVAL", "0"),
        ("PULSEGUARD_STALE_AFTER", "ten"),
        ("PULSEGUARD_STALE_AFTER", "20"),
        ("DJANGO_DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://x@localhost/db"),
        ("PULSEGUARD_LOG_FORMAT", "xml"),
        ("PULSEGUARD_MAX_BODY_BYTES", "-1"),
    ],
)
def test_a_bad_value_fails_at_start_up_naming_the_variable(variable, value):
    result = _start(**{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr.splitlines()[-1]


def test_a_missing_secret_key_fails_outside_debug():
    result = _start(DJANGO_DEBUG="false")
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr


def test_a_missing_database_url_says_how_to_get_one():
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**environment, "DJANGO_SETTINGS_MODULE": "pulseguard.settings", "DJANGO_DEBUG": "true"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0 and "DATABASE_URL" in result.stderr.splitlines()[-1]


def test_good_values_start():
    result = _start(PULSEGUARD_HEARTBEAT_INTERVAL="5", PULSEGUARD_STALE_AFTER="60", DJANGO_DEBUG="yes")
    assert result.returncode == 0, result.stderr
