"""Command line: ``ticos-agent run|config|tools|inspect|export|memory|doctor|replay``.

``run`` serves until SIGTERM/SIGINT, then stops gracefully (storage flushed, actuators in
their safe state). ``config`` prints the effective configuration as TOML that can be copied
into a file (secrets masked unless ``--show-secrets``); ``config --example`` prints a
commented file with every key, its default and one line of documentation. ``tools`` prints
the robot's tools and, with storage on, the memory tools as OpenAI Realtime function definitions
(``{"tools": [...]}``, as ``GET /v1/tools`` serves them, which adds the integrator's); what it
leaves out goes to stderr.
``inspect`` and ``export`` read a database offline (from a TF card on another computer),
read-only, never changing the card. ``memory export|import|forget`` moves a robot's memories
(and conversations) to another card or robot, or forgets them (:mod:`.memory_cli`).
``doctor`` checks the environment. ``replay`` sends a JSON-lines trace to a running agent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ticos-agent", description="Device agent of a Ticos robot.")
    parser.add_argument("--version", action="version", version=f"ticos-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="serve realtime events until stopped")
    p.add_argument("--config", "-c", help="TOML config file (default: none, a simulated robot)")
    p.add_argument("--port", type=int, help="override server.port")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    p = sub.add_parser("config", help="print the effective config as TOML (secrets masked), or --example")
    p.add_argument("--config", "-c")
    p.add_argument("--show-secrets", action="store_true", help="print secrets (server.token ...) as they are")
    p.add_argument("--example", action="store_true",
                   help="print a commented config file: every key, its default and what it does")
    p.add_argument("--json", action="store_true", help="print the effective config as JSON instead of TOML")

    p = sub.add_parser("tools", help="print the tools the voice agent can use (OpenAI Realtime function "
                                     "definitions) as JSON")
    p.add_argument("--config", "-c")

    for name, text in (("inspect", "show what the robot heard, said and did (read-only; views: transcript, "
                                   "faults, summary, messages, memories, calls, events, sessions)"),
                       ("export", "export messages, memories, calls (or any view) as JSON lines, CSV or Markdown")):
        from .inspect.options import add_arguments

        p = sub.add_parser(name, help=text, description=text)
        add_arguments(p, export=name == "export")

    p = sub.add_parser("memory", help="export, import or forget the robot's memories (export [--conversations], "
                                      "import FILE, forget --all --yes)")
    from .memory_cli import add_arguments as memory_arguments

    memory_arguments(p)

    p = sub.add_parser("doctor", help="check this machine and config: port, storage, serial, GPIO, audio")
    p.add_argument("--config", "-c")

    p = sub.add_parser("replay", help="send a JSON-lines trace to a running agent")
    p.add_argument("trace", help="file with one event per line")
    p.add_argument("--config", "-c", help="the agent's config file: its server.host, server.port and server.token "
                                         "are used, the token also with --url (default: none: port 9999, no token)")
    p.add_argument("--url", help="the agent's realtime WebSocket (default: ws://127.0.0.1:<server.port>/realtime)")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    p.add_argument("--quiet", type=float, default=1.0,
                   help="after the last line, wait until the agent has been quiet this many seconds")

    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "config":
        return _config(args)
    if args.command == "tools":
        return _tools(args)
    if args.command in ("inspect", "export"):
        from .inspect import main as inspect_main

        return inspect_main(args)
    if args.command == "memory":
        from .memory_cli import main as memory_main

        return memory_main(args)
    if args.command == "doctor":
        from .doctor import main as doctor_main

        return doctor_main(args.config)
    if args.command == "replay":
        from .replay import main as replay_main

        return replay_main(args)
    return 2


def _load(path: str | None, overrides: dict[str, Any] | None = None) -> Config | None:
    from .config import ConfigErrors, load

    try:
        return load(path, overrides=overrides)
    except ConfigErrors as exc:
        print(f"ticos-agent: refusing to start: {exc}", file=sys.stderr)
        return None


def _config(args: argparse.Namespace) -> int:
    if args.example:
        from .config.example import example

        sys.stdout.write(example())
        return 0
    config = _load(args.config)
    if config is None:
        return 2
    if args.json:
        print(json.dumps(config.as_dict(mask_secrets=not args.show_secrets), indent=2))
        return 0
    from .config import to_toml

    sys.stdout.write(to_toml(config, show_secrets=args.show_secrets))
    return 0


def _tools(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    from .tools import Toolbox

    box = Toolbox(config.actuators, lambda topic: False, memory=config.storage.enabled)
    for note in box.notes:
        print(f"ticos-agent: {note}", file=sys.stderr)
    print(json.dumps({"tools": box.tools()}, indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    overrides = {"server": {"port": args.port}} if args.port is not None else None
    config = _load(args.config, overrides)
    if config is None:
        return 2
    from .logs import setup

    os.umask(0o077)  # what the agent creates (database, WAL, session files) is its user's alone
    setup(args.log_level or config.log_level)
    try:
        asyncio.run(_serve(config))
    except OSError as exc:
        log.error("could not start: %s", exc)
        return 1
    return 0


async def _serve(config: Config) -> None:
    from .agent import Agent
    from .sdnotify import notify, watchdog

    agent = Agent(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    notify(f"READY=1\nSTATUS=serving on port {agent.port}")
    dog = asyncio.create_task(watchdog(agent.alive))
    try:
        await stop.wait()
        log.info("signal received; stopping gracefully")
    finally:
        notify("STOPPING=1")
        dog.cancel()
        await agent.stop()


if __name__ == "__main__":
    sys.exit(main())
