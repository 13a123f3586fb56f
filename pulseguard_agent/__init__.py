"""PulseGuard agent SDK: register an agent, heartbeat with host and GPU readings, obey commands.

    from pulseguard_agent import AgentConfig, AgentRunner, Client

    config = AgentConfig.from_env(name="coder-01", capabilities=["code-gen"])
    runner = AgentRunner(Client(config.url), config=config)
    runner.install_signal_handlers()
    runner.run()  # until SIGTERM / SIGINT, then goodbye

Depends on the standard library and psutil; pynvml (nvidia-ml-py) is used when present.
Never imports Django: it runs on agent hosts, not on the server.
"""

import logging

from pulseguard_agent._version import __version__
from pulseguard_agent.backoff import Backoff
from pulseguard_agent.client import Client
from pulseguard_agent.config import AgentConfig
from pulseguard_agent.errors import AgentRejected, PulseGuardError, ServerUnavailable
from pulseguard_agent.gpu import gpu_inventory, gpu_readings
from pulseguard_agent.host import host_inventory, host_readings
from pulseguard_agent.runner import AgentRunner
from pulseguard_agent.simulator import SimTiming, Simulator

# A library leaves handler configuration to the application.
logging.getLogger("pulseguard_agent").addHandler(logging.NullHandler())

__all__ = [
    "AgentConfig",
    "AgentRejected",
    "AgentRunner",
    "Backoff",
    "Client",
    "PulseGuardError",
    "ServerUnavailable",
    "SimTiming",
    "Simulator",
    "__version__",
    "gpu_inventory",
    "gpu_readings",
    "host_inventory",
    "host_readings",
]
