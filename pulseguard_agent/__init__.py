"""PulseGuard agent SDK: register an agent, heartbeat, obey commands, send host, GPU and LLM telemetry, run tasks.

    from pulseguard_agent import AgentConfig, AgentRunner, Client

    config = AgentConfig.from_env(name="coder-01", capabilities=["code-review"])
    runner = AgentRunner(Client(config.url), config=config, task_handlers={"code.review": review})
    runner.install_signal_handlers()
    runner.run()  # until SIGTERM / SIGINT: running tasks finish, then goodbye

    # anywhere in the process, e.g. after each model call:
    pulseguard_agent.record_llm_call("openai", "gpt-4o", tokens_in=1200, tokens_out=310, latency_ms=1830)

Depends on the standard library and psutil; pynvml (nvidia-ml-py) is used when present.
Never imports Django: it runs on agent hosts, not on the server.
"""

import logging

from pulseguard_agent._version import __version__
from pulseguard_agent.backoff import Backoff
from pulseguard_agent.buffer import TelemetryBuffer, default_buffer, record_llm_call, record_metric
from pulseguard_agent.client import Client
from pulseguard_agent.config import AgentConfig, TelemetryConfig
from pulseguard_agent.errors import AgentRejected, PulseGuardError, ServerUnavailable, TaskError, TaskLost, TaskRejected
from pulseguard_agent.gpu import gpu_inventory, gpu_readings, gpu_samples
from pulseguard_agent.host import HostSampler, host_inventory, host_readings
from pulseguard_agent.runner import AgentRunner
from pulseguard_agent.sender import TelemetrySender
from pulseguard_agent.simulator import SimTiming, Simulator
from pulseguard_agent.spool import Spool
from pulseguard_agent.telemetry import Telemetry
from pulseguard_agent.worker import ClaimedTask, TaskWorker, current_task

# A library leaves handler configuration to the application.
logging.getLogger("pulseguard_agent").addHandler(logging.NullHandler())

__all__ = [
    "AgentConfig",
    "AgentRejected",
    "AgentRunner",
    "Backoff",
    "ClaimedTask",
    "Client",
    "HostSampler",
    "PulseGuardError",
    "ServerUnavailable",
    "SimTiming",
    "Simulator",
    "Spool",
    "TaskError",
    "TaskLost",
    "TaskRejected",
    "TaskWorker",
    "Telemetry",
    "TelemetryBuffer",
    "TelemetryConfig",
    "TelemetrySender",
    "__version__",
    "current_task",
    "default_buffer",
    "gpu_inventory",
    "gpu_readings",
    "gpu_samples",
    "host_inventory",
    "host_readings",
    "record_llm_call",
    "record_metric",
]
