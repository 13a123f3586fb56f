"""Command line: `python -m pulseguard_agent run | simulate | inventory`.

Settings come from flags, then PULSEGUARD_* environment variables. Prefer the
environment for the enrollment key: command lines are visible to every user in `ps`.
Exit codes: 0 clean stop, 1 refused by the server, 2 bad usage, 75 restart requested
(with --on-restart exit, so a supervisor such as systemd or Kubernetes restarts us).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time

from pulseguard_agent._version import __version__
from pulseguard_agent.client import Client
from pulseguard_agent.config import AgentConfig, TelemetryConfig, parse_labels, parse_size
from pulseguard_agent.errors import AgentRejected, PulseGuardError
from pulseguard_agent.gpu import gpu_samples
from pulseguard_agent.host import HostSampler, host_inventory, host_readings
from pulseguard_agent.runner import AgentRunner
from pulseguard_agent.simulator import Simulator

log = logging.getLogger("pulseguard_agent")

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_RESTART = 75  # EX_TEMPFAIL: "try again", which is what a supervisor should do


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=os.environ.get("PULSEGUARD_LOG_LEVEL", "INFO"),
                        type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--url", default=os.environ.get("PULSEGUARD_URL"), help="server URL [PULSEGUARD_URL]")
    server.add_argument("--enrollment-key", default=os.environ.get("PULSEGUARD_ENROLLMENT_KEY"),
                        help="enrollment key [PULSEGUARD_ENROLLMENT_KEY; prefer the variable]")
    server.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request (default 10)")
    server.add_argument("--interval", type=float, default=None,
                        help="seconds between heartbeats (default: what the server asks for)")

    parser = argparse.ArgumentParser(prog="python -m pulseguard_agent", description="PulseGuard agent SDK")
    parser.add_argument("--version", action="version", version=f"pulseguard-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[common, server], help="register this machine and heartbeat")
    run.add_argument("--name", default=None, help="agent name [PULSEGUARD_AGENT_NAME, else the hostname]")
    run.add_argument("--kind", choices=["agent", "worker"], default=None)
    run.add_argument("--capability", action="append", default=[], metavar="X", help="repeatable")
    run.add_argument("--label", action="append", default=[], metavar="K=V", help="repeatable")
    run.add_argument("--model", default=None, help="LLM model, e.g. gpt-4o")
    run.add_argument("--provider", default=None, help="LLM provider, e.g. openai")
    run.add_argument("--agent-version", default=None, help="your agent's version (default: the SDK's)")
    run.add_argument("--replace", action="store_true", default=None,
                     help="take over an agent already registered under this name")
    run.add_argument("--on-restart", choices=["log", "exit"], default="log",
                     help="on a restart command: only log it, or exit with code 75 for a supervisor to restart")
    tasks = run.add_argument_group("tasks")
    tasks.add_argument("--task-handler", default=None, metavar="MODULE:FUNCTION",
                       help="work the task queue: FUNCTION(kind, payload) -> dict runs each claimed task")
    tasks.add_argument("--task-concurrency", type=int, default=1, help="tasks run at once (default 1)")
    tasks.add_argument("--task-grace", type=float, default=25.0,
                       help="seconds running tasks get to finish on SIGTERM (default 25)")
    telemetry = run.add_argument_group("telemetry")
    telemetry.add_argument("--no-telemetry", dest="telemetry", action="store_false", default=None,
                           help="heartbeats only: no host/GPU/LLM samples [PULSEGUARD_TELEMETRY=false]")
    telemetry.add_argument("--metrics-interval", type=float, default=None,
                           help="seconds between host/GPU samples (default 10) [PULSEGUARD_METRICS_INTERVAL]")
    telemetry.add_argument("--flush-interval", type=float, default=None,
                           help="seconds between batches (default 10) [PULSEGUARD_FLUSH_INTERVAL]")
    telemetry.add_argument("--spool-dir", default=None,
                           help="where batches wait while the server is unreachable [PULSEGUARD_SPOOL_DIR]")
    telemetry.add_argument("--spool-max-bytes", default=None,
                           help="spool bound, e.g. 64MiB (default); 0 turns the spool off [PULSEGUARD_SPOOL_MAX_BYTES]")
    run.set_defaults(func=_run)

    sim = commands.add_parser("simulate", parents=[common, server], help="run a fleet of simulated agents")
    sim.add_argument("--agents", type=int, default=10, help="how many (default 10)")
    sim.add_argument("--prefix", default="demo", help="name prefix (default demo)")
    sim.add_argument("--fail-rate", type=float, default=0.05, help="share of agents that stall and crash")
    sim.add_argument("--silent-rate", type=float, default=0.1, help="share of agents that go silent for minutes")
    sim.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    sim.add_argument("--seed", type=int, default=None, help="same seed, same fleet")
    sim.add_argument("--workers", type=int, default=None, help="threads sending requests (default min(agents, 16))")
    sim.add_argument("--metrics-interval", type=float, default=10.0,
                     help="seconds between simulated host/GPU samples (default 10)")
    sim.add_argument("--no-telemetry", dest="telemetry", action="store_false", default=True,
                     help="heartbeats only: no host/GPU/LLM samples")
    sim.add_argument("--spool-dir", default=None, help="spool each agent's unsent batches here (default: none)")
    sim.add_argument("--tasks", action="store_true", default=False,
                     help="work the task queue: claim, work, complete or fail the tasks each agent can run")
    sim.set_defaults(func=_simulate)

    inventory = commands.add_parser("inventory", parents=[common], help="print what this machine would report")
    inventory.set_defaults(func=_inventory)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(args.log_level)
    return args.func(args)


def _require_server(args: argparse.Namespace) -> str | None:
    if not args.url:
        return "--url (or PULSEGUARD_URL) is required"
    if not args.enrollment_key:
        return "--enrollment-key (or PULSEGUARD_ENROLLMENT_KEY) is required"
    return None


def _run(args: argparse.Namespace) -> int:
    problem = _require_server(args)
    try:
        if problem:
            raise ValueError(problem)
        spool_max = parse_size(args.spool_max_bytes, "--spool-max-bytes") if args.spool_max_bytes else None
        telemetry = TelemetryConfig.from_env(
            enabled=args.telemetry, metrics_interval_s=args.metrics_interval, flush_interval_s=args.flush_interval,
            spool_dir=args.spool_dir, spool_max_bytes=spool_max,
        )
        config = AgentConfig.from_env(
            url=args.url, enrollment_key=args.enrollment_key, name=args.name, kind=args.kind,
            capabilities=args.capability or None, labels=parse_labels(args.label) if args.label else None,
            model=args.model, provider=args.provider, version=args.agent_version, replace=args.replace,
            telemetry=telemetry,
        )
        task_handler = _import_handler(args.task_handler) if args.task_handler else None
        if not 1 <= args.task_concurrency <= 50:
            raise ValueError("--task-concurrency must be between 1 and 50")
        client = Client(config.url, timeout=args.timeout)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    restart_requested = False

    def exit_for_restart(command: dict) -> None:
        nonlocal restart_requested
        restart_requested = True
        log.info("Restart requested (command %s): exiting for the supervisor to restart us", command.get("id"))
        runner.stop()

    runner = AgentRunner(client, config=config, interval_s=args.interval,
                         on_restart=exit_for_restart if args.on_restart == "exit" else None,
                         task_handler=task_handler, task_concurrency=args.task_concurrency, task_grace_s=args.task_grace)
    runner.install_signal_handlers()
    try:
        runner.run()
    except AgentRejected as exc:
        print(f"error: the server rejected this agent: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except PulseGuardError as exc:
        print(f"error: registration refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        client.close()
    return EXIT_RESTART if restart_requested else 0


def _import_handler(spec: str):
    """`package.module:function` -> the function; ValueError with the reason otherwise."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError(f"--task-handler must look like package.module:function (got {spec!r})")
    try:
        handler = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--task-handler {spec}: {exc}") from exc
    if not callable(handler):
        raise ValueError(f"--task-handler {spec} is not callable")
    return handler


def _simulate(args: argparse.Namespace) -> int:
    try:
        problem = _require_server(args)
        if problem:
            raise ValueError(problem)
        sim = Simulator(
            args.url, args.enrollment_key, agents=args.agents, prefix=args.prefix, fail_rate=args.fail_rate,
            silent_rate=args.silent_rate, interval=args.interval, seed=args.seed, workers=args.workers,
            timeout=args.timeout, telemetry=args.telemetry, metrics_interval=args.metrics_interval,
            spool_dir=args.spool_dir, tasks=args.tasks,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    previous = {sig: signal.signal(sig, lambda signum, frame: sim.request_stop())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        sim.run(args.duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps(sim.stats.snapshot(), sort_keys=True))
    if sim.error is not None:
        print(f"error: registration refused: {sim.error}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def _inventory(args: argparse.Namespace) -> int:
    sampler = HostSampler()
    sampler.sample()
    time.sleep(0.25)  # a short window, so the rates have something to measure
    report = {"host": host_inventory(), "readings": host_readings(), "telemetry": [sampler.sample(), *gpu_samples()]}
    print(json.dumps(report, indent=2))
    return 0
