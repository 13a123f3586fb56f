"""Settings for bench/ runs: the project's own settings, quiet, plus the baseline endpoint.

Nothing here makes our endpoint faster than in production: the middleware, database
and connection settings are the project's. Only the log level and the URLs differ.
"""

from pulseguard.logging import build_logging_config
from pulseguard.settings import *  # noqa: F401,F403
from pulseguard.settings import PULSEGUARD_LOG_FORMAT

DEBUG = False
ROOT_URLCONF = "bench.urls"
# No per-request log lines: warnings and errors only.
PULSEGUARD_LOG_LEVEL = "WARNING"
LOGGING = build_logging_config(fmt=PULSEGUARD_LOG_FORMAT, level="WARNING")
