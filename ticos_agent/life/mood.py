"""A mood that lasts: the last emotion, fading towards neutral, kept across restarts.

The last emotion the robot showed sets the mood: its tag, at the call's intensity. The level
then halves every ``half_life`` seconds (wall clock, so a restart or a night switched off
counts too). The mood is written to a small JSON file (``mood.json`` beside the database, or in
the internal storage folder) whenever it changes, atomically and readable by the service
user only, and read back at start.

    >>> mood = Mood(half_life=60.0)
    >>> mood.feel("happy", 0.8, now=0.0)
    >>> round(mood.level(now=60.0), 2)
    0.4
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Mood:
    def __init__(self, half_life: float, path: Path | None = None):
        self.half_life = half_life
        self.path = path
        self.tag: str | None = None
        self._level = 0.0
        self._since = 0.0  # wall-clock time the level was set

    def feel(self, tag: str, intensity: float, now: float | None = None) -> None:
        self.tag, self._level, self._since = tag, max(0.0, min(1.0, intensity)), time.time() if now is None else now
        self.save()

    def level(self, now: float | None = None) -> float:
        if self.tag is None:
            return 0.0
        age = max(0.0, (time.time() if now is None else now) - self._since)
        return float(self._level * 0.5 ** (age / self.half_life))

    def as_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "level": round(self.level(), 3), "half_life_s": self.half_life}

    # --- kept across restarts -------------------------------------------------------------

    def save(self) -> None:
        if self.path is None or self.tag is None:
            return
        data = json.dumps({"tag": self.tag, "level": self._level, "since": self._since})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".mood-", dir=self.path.parent)  # 0600
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("mood not saved to %s: %s", self.path, exc)

    def load(self) -> None:
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text())
            tag, level, since = data["tag"], float(data["level"]), float(data["since"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("mood file %s unreadable (%s); starting neutral", self.path, exc)
            return
        if isinstance(tag, str) and 0 <= level <= 1:
            self.tag, self._level, self._since = tag, level, since
        else:
            log.warning("mood file %s has tag %r, level %r; starting neutral", self.path, tag, level)
