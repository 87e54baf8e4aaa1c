"""What ``GET /health`` says: one JSON object a person or a supervisor can read.

Built from the parts' own ``health()`` reports, handed in one by one (no part of the agent
is read behind its back). ``status`` is ``ok`` or ``degraded`` with the ``problems`` that make
it so; a simulated robot says so loudly (``simulated``, ``notice``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from . import __version__


class Reports(Protocol):
    def health(self) -> dict[str, Any]: ...


def build_health(*, store: Reports | None, actuators: Reports | None, audio: Reports | None,
                 audio_off_reason: str, uptime_s: float, port: int | None, connections: int,
                 counters: Counter[str], handlers: dict[str, int], life: Reports | None = None,
                 loop: Reports | None = None) -> dict[str, Any]:
    """``audio_off_reason`` says why ``audio`` is ``None`` (disabled, not configured)."""
    problems: list[str] = []
    if store is not None:
        storage = store.health()
        if storage.get("state") != "ok":
            problems.append(f"storage: {storage.get('reason')}")
    else:
        storage = {"state": "disabled", "reason": "storage.enabled is false"}
    robot: dict[str, Any] = actuators.health() if actuators is not None else {"simulated": False, "actuators": {}}
    for name, info in robot.get("actuators", {}).items():
        if info.get("state") != "ok":
            problems.append(f"actuator {name}: {info.get('state')} ({info.get('error')})")
    if audio is not None:
        sound = audio.health()
        if sound.get("state") in ("disabled", "retrying"):
            problems.append(f"audio: {sound.get('state')} ({sound.get('reason')})")
    else:
        sound = {"state": "disabled", "reason": audio_off_reason}
    simulated = bool(robot.get("simulated"))
    return {
        "status": "degraded" if problems else "ok",
        "problems": problems,
        "version": __version__,
        "uptime_s": round(uptime_s, 3),
        "simulated": simulated,
        "notice": "SIMULATED actuators: no hardware is being driven" if simulated else None,
        "port": port,
        "connections": connections,
        "counters": dict(counters),
        "handlers": handlers,
        "storage": storage,
        "actuators": robot,
        "audio": sound,
        "robot": life.health() if life is not None else None,
        "loop": loop.health() if loop is not None else None,
    }
