"""What ``GET /health`` says: one JSON object a person or a supervisor can read."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .agent import Agent


def build_health(agent: Agent) -> dict[str, Any]:
    problems: list[str] = []
    if agent.store is not None:
        storage = agent.store.health()
        if storage.get("state") != "ok":
            problems.append(f"storage: {storage.get('reason')}")
    else:
        storage = {"state": "disabled", "reason": "storage.enabled is false"}
    actuators = agent.actuators.health() if agent.actuators is not None else {"simulated": False, "actuators": {}}
    for name, info in actuators.get("actuators", {}).items():
        if info.get("state") != "ok":
            problems.append(f"actuator {name}: {info.get('state')} ({info.get('error')})")
    if agent.audio is not None:
        audio = agent.audio.health()
    else:
        audio = {"state": "disabled", "reason": "audio.enabled is false" if agent.config.audio is not None
                 else "not configured"}
    if audio.get("state") in ("disabled", "retrying") and getattr(getattr(agent.audio, "config", None), "enabled", False):
        problems.append(f"audio: {audio.get('state')} ({audio.get('reason')})")
    simulated = bool(actuators.get("simulated"))
    started = agent._started_at
    return {
        "status": "degraded" if problems else "ok",
        "problems": problems,
        "version": __version__,
        "uptime_s": round(time.monotonic() - started, 3) if started is not None else 0.0,
        "simulated": simulated,
        "notice": "SIMULATED actuators: no hardware is being driven" if simulated else None,
        "port": agent.port,
        "connections": len(agent._connections),
        "counters": dict(agent.counters),
        "handlers": agent.dispatcher.stats(),
        "storage": storage,
        "actuators": actuators,
        "audio": audio,
    }
