"""``ticos-agent replay``: send a JSON-lines trace to a running agent, print its replies.

Every line of the file is sent as one text frame (blank lines are skipped), at ``--rate``
events per second or as fast as possible. Replies are printed as they come. After the last
line the replay waits until the agent has read every frame (a WebSocket ping answered after
them) and then until it has been quiet for ``--quiet`` seconds, so the replies to the last
lines (errors, function-call outputs) are not lost. Exit status: 0 when no error reply came,
1 when the agent answered with at least one error, 2 when the trace or the agent could not
be reached.

With ``--config`` the agent's own config file gives where it listens (``server.host`` and
``server.port``, when there is no ``--url``) and its token (``server.token``, sent as
``Authorization: Bearer`` to the agent, or to whatever ``--url`` names).
"""

from __future__ import annotations

import asyncio
import json
import sys
from argparse import Namespace

import aiohttp

MAX_WAIT = 30.0  # seconds at most after the last line


def _is_error(text: str) -> bool:
    try:
        return bool(json.loads(text).get("type") == "error")
    except (ValueError, AttributeError):
        return False


async def _replay(lines: list[str], url: str, rate: float, quiet: float,
                  headers: dict[str, str]) -> tuple[int, int]:
    errors = 0
    loop = asyncio.get_running_loop()
    replied = asyncio.Event()
    ponged = asyncio.Event()
    async with aiohttp.ClientSession() as session, session.ws_connect(url, autoping=False, headers=headers) as ws:
        async def read_replies() -> None:
            nonlocal errors
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    replied.set()
                    errors += _is_error(msg.data)
                    print(msg.data, flush=True)
                elif msg.type == aiohttp.WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == aiohttp.WSMsgType.PONG:
                    ponged.set()

        reader = asyncio.create_task(read_replies())
        for line in lines:
            await ws.send_str(line)
            if rate > 0:
                await asyncio.sleep(1 / rate)
        await ws.ping(b"replay-end")  # answered once the agent has read every frame before it
        deadline = loop.time() + MAX_WAIT
        try:
            await asyncio.wait_for(ponged.wait(), MAX_WAIT)
        except TimeoutError:
            print("ticos-agent replay: the agent did not confirm reading the trace", file=sys.stderr)
        while loop.time() < deadline and not reader.done():  # until quiet for `quiet` seconds
            replied.clear()
            try:
                await asyncio.wait_for(replied.wait(), quiet)
            except TimeoutError:
                break
        await ws.close()
        await reader
    return len(lines), errors


def _connect_host(host: str) -> str:
    """Where to reach an agent listening on ``host``: the loopback of the same family for a
    wildcard (an IPv6 socket takes no IPv4), else the address itself (bracketed for IPv6)."""
    if host in ("0.0.0.0", "localhost"):
        return "127.0.0.1"
    if host == "::":
        host = "::1"
    return f"[{host.replace('%', '%25')}]" if ":" in host else host


def main(args: Namespace) -> int:
    from .config import ConfigErrors, load

    try:
        server = load(getattr(args, "config", None), hardware=False).server
    except ConfigErrors as exc:
        print(f"ticos-agent replay: {exc}", file=sys.stderr)
        return 2
    if not args.url:
        if server.port == 0:
            print("ticos-agent replay: the config picks a free port (server.port = 0): pass --url",
                  file=sys.stderr)
            return 2
        args.url = f"ws://{_connect_host(server.host)}:{server.port}/realtime"
    headers = {"Authorization": f"Bearer {server.token}"} if server.token else {}
    try:
        with open(args.trace, encoding="utf-8") as fh:
            lines = [line.rstrip("\r\n") for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        print(f"ticos-agent replay: cannot read the trace {args.trace}: {exc}", file=sys.stderr)
        return 2
    try:
        sent, errors = asyncio.run(_replay(lines, args.url, args.rate, getattr(args, "quiet", 1.0), headers))
    except (OSError, aiohttp.ClientError) as exc:
        print(f"ticos-agent replay: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    print(f"sent {sent} event(s), {errors} error reply(ies)", file=sys.stderr)
    return 1 if errors else 0
