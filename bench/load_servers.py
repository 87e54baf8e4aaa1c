"""The servers that ``bench/load.py`` measures side by side, one process each.

    python bench/load_servers.py MODE PORT WORKDIR

MODE is one of:

``agent``           ticos-agent's native ``Agent`` (storage with the event log, a ``*`` handler)
``client-api``      ticos-agent through its ``TicosClient`` API (``enable_local_storage()``,
                    a message handler), as an existing ticos-client integrator runs it
``client-inline``   the same with ``TicosClient(inline_handlers=True)``: handlers on the agent's
                    loop (as ticos-client ran them), no hop to the handler thread
``ticos-client``    the ticos-client SDK itself (run with its own environment's Python, see
                    ``bench/ticos_client_env.py``); same integrator program as ``client-api``
``bare``            the limit: an aiohttp WebSocket route that ``json.loads`` each frame and
                    calls the handler, nothing else

Every mode calls the same :class:`Probe` as its integrator handler, for every event that
reaches the integrator. The probe notes ``time.time_ns()`` against the ``sent_ns`` the load
generator put into the event, and obeys control events (``session.updated`` with a ``bench``
field, a type every server passes to its handlers): ``mark`` prints ``MARK <count>`` (every
earlier frame of that connection has reached the handler), ``reset`` forgets the latencies,
``report`` writes them to ``WORKDIR/latency.json`` and prints ``REPORT <n>``. The process
prints ``READY <seconds the start call took>`` once it serves, and stops on SIGTERM.

Only the standard library is imported at module level: the ticos-client mode runs under an
interpreter that has neither aiohttp nor ticos_agent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: where ``ticos_agent`` is imported from: this checkout, or a candidate's (``load.py --variant``)
AGENT_ROOT = os.environ.get("BENCH_AGENT_ROOT") or str(ROOT)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Probe:
    """The integrator's handler: one call per event, whatever thread calls it."""

    def __init__(self, workdir: str):
        self.report = Path(workdir) / "latency.json"
        self.count = 0
        self.sent: list[int] = []          # client send -> handler called, ns
        self.received: list[int] = []      # frame received -> handler called, ns (where hooked)
        self.arrivals: dict[str, int] = {}  # event_id -> frame arrival (the optional hook)

    def __call__(self, event: dict) -> None:
        now = time.time_ns()
        self.count += 1
        sent = event.get("sent_ns")
        if sent is not None:
            self.sent.append(now - sent)
            if self.arrivals:
                arrived = self.arrivals.pop(event.get("event_id"), None)
                if arrived is not None:
                    self.received.append(now - arrived)
        control = event.get("bench")
        if control is not None:
            self.control(control)

    def arrived(self, frame) -> None:
        """Note when a stamped frame reached the server's handling: the clock first, and no JSON
        parsing (that would add itself to the latency): load.py writes '"event_id": "...",
        "sent_ns": N' at the end of every stamped frame."""
        if isinstance(frame, str) and "sent_ns" in frame:
            now = time.time_ns()
            i = frame.rfind('"event_id": "') + 13
            self.arrivals[frame[i:frame.index('"', i)]] = now

    def control(self, what: str) -> None:
        if what == "mark":
            say(f"MARK {self.count}")
        elif what == "reset":
            self.sent.clear()
            self.received.clear()
            self.arrivals.clear()
            say("RESET")
        elif what == "report":
            tmp = self.report.with_suffix(".tmp")
            tmp.write_text(json.dumps({"sent": self.sent, "received": self.received}))
            tmp.replace(self.report)
            say(f"REPORT {len(self.sent)}")


def wait_for_sigterm() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


# --- ticos-agent: the native Agent --------------------------------------------------------

def serve_agent(port: int, workdir: str) -> None:
    import asyncio

    sys.path.insert(0, AGENT_ROOT)
    from ticos_agent import Agent

    probe = Probe(workdir)

    async def main() -> None:
        t0 = time.perf_counter()
        agent = Agent({"server": {"host": "127.0.0.1", "port": port}, "storage": {"dir": workdir},
                       "audio": {"enabled": False}})
        agent.on("*", probe)
        agent.on_function("set_light", lambda call: {"on": call.arguments.get("on")})
        hook_frame_arrival(agent, probe)
        await agent.start()
        say(f"READY {time.perf_counter() - t0:.4f}")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await agent.stop()

    asyncio.run(main())


def hook_frame_arrival(agent, probe: Probe) -> None:
    """Optional: note when a stamped frame reached the intake (``agent.intake.ingest``, which the
    server looks up when a socket opens; ``agent.ingest`` in older code). When there is neither,
    say so and measure without it."""
    owner = getattr(agent, "intake", None)
    if getattr(owner, "ingest", None) is None:
        owner = agent
    ingest = getattr(owner, "ingest", None)
    if ingest is None:
        say("NOTE frame-received hook skipped: no intake.ingest() nor Agent.ingest()")
        return

    arrived = probe.arrived

    def ingest_timed(frame, conn):
        arrived(frame)
        return ingest(frame, conn)

    owner.ingest = ingest_timed


# --- the TicosClient API: ticos-agent's and the ticos-client SDK's --------------------------

def serve_client(port: int, workdir: str, *, sdk: bool, inline: bool = False) -> None:
    if sdk:
        # ticos-client 0.7.2 hard-codes uvicorn's host to 0.0.0.0; uvloop binds outside
        # Python's socket module (the netguard cannot rewrite it), so pin the host here.
        import uvicorn

        init = uvicorn.Config.__init__

        def loopback_only(self, app, *args, **kwargs):
            if kwargs.get("host") not in (None, "127.0.0.1", "localhost"):
                sys.stderr.write(f"bench: uvicorn host {kwargs['host']!r} pinned to 127.0.0.1\n")
            kwargs["host"] = "127.0.0.1"
            init(self, app, *args, **kwargs)

        uvicorn.Config.__init__ = loopback_only
        from ticos_client import TicosClient
    else:
        sys.path.insert(0, AGENT_ROOT)
        from ticos_agent import TicosClient

    probe = Probe(workdir)
    t0 = time.perf_counter()
    # INTERNAL: ~/.config/ticos/ticos.db under the bench HOME
    client = TicosClient(port=port, inline_handlers=True) if inline else TicosClient(port=port)
    client.enable_local_storage()
    client.set_message_handler(probe)
    client.set_function_call_handler(lambda name, args: {"on": args.get("on")})
    if not client.start():
        say("FAILED TicosClient.start() returned False")
        sys.exit(1)
    if not sdk:
        hook_frame_arrival(client.agent, probe)  # before the load generator connects
    say(f"READY {time.perf_counter() - t0:.4f}")
    wait_for_sigterm()
    # ticos-client 0.7.2's stop() runs uvicorn's shutdown() on a second event loop and can wait
    # on it for ever; its storage commits every write, so nothing is lost by leaving then.
    stopper = threading.Thread(target=client.stop, daemon=True)
    stopper.start()
    stopper.join(5)
    if stopper.is_alive():
        say("NOTE TicosClient.stop() had not returned after 5 s (left without it)")
        os._exit(0)


# --- the limit: bare aiohttp ----------------------------------------------------------------

def serve_bare(port: int, workdir: str) -> None:
    import asyncio

    from aiohttp import WSMsgType, web

    probe = Probe(workdir)
    loads, arrived = json.loads, probe.arrived

    async def realtime(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20, compress=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                arrived(msg.data)  # as hook_frame_arrival notes it for the agent
                probe(loads(msg.data))
        return ws

    async def main() -> None:
        t0 = time.perf_counter()
        app = web.Application()
        app.router.add_get("/realtime", realtime)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        say(f"READY {time.perf_counter() - t0:.4f}")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


MODES = {
    "agent": serve_agent,
    "client-api": lambda port, workdir: serve_client(port, workdir, sdk=False),
    "client-inline": lambda port, workdir: serve_client(port, workdir, sdk=False, inline=True),
    "ticos-client": lambda port, workdir: serve_client(port, workdir, sdk=True),
    "bare": serve_bare,
}

def prelude() -> None:
    """``load.py --prelude FILE``: run FILE in a ticos-agent server before it starts (temporary
    timestamps or monkeypatches for an investigation; nothing of it is part of the figures'
    definition). It can reach this module's :class:`Probe` as ``__main__.Probe``."""
    path = os.environ.get("BENCH_PRELUDE")
    if path:
        import runpy

        sys.path.insert(0, AGENT_ROOT)
        runpy.run_path(path, run_name="bench_prelude")
        say(f"NOTE prelude {path} ran")


if __name__ == "__main__":
    mode, port, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(workdir, exist_ok=True)
    if mode in ("agent", "client-api", "client-inline"):
        prelude()
        if str(ROOT) != AGENT_ROOT:
            sys.path.insert(0, AGENT_ROOT)
            import ticos_agent

            say(f"NOTE ticos_agent from {Path(ticos_agent.__file__).parent}")
    MODES[mode](port, workdir)
