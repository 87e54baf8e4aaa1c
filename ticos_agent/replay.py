"""``ticos-agent replay``: send a JSON-lines trace to a running agent, print its replies."""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp


def _read_trace(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.strip()]


async def _replay(lines: list[str], url: str, rate: float) -> int:
    errors = 0
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        async def read_replies() -> None:
            nonlocal errors
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    errors += '"type": "error"' in msg.data or '"type":"error"' in msg.data
                    print(msg.data)

        reader = asyncio.create_task(read_replies())
        for line in lines:
            await ws.send_str(line)
            if rate > 0:
                await asyncio.sleep(1 / rate)
        await asyncio.sleep(0.3)
        await ws.close()
        await reader
    print(f"sent {len(lines)} event(s), {errors} error reply(ies)", file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_replay(_read_trace(args.trace), args.url, args.rate))
    except (OSError, aiohttp.ClientError) as exc:
        print(f"ticos-agent replay: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
