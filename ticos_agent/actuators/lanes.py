"""What waits and runs on an actuator: commands, their outcomes, and the caps on how much may wait.

A :class:`Command` is one planned piece of work (a motion, an expression, a pose, a return to
neutral, an ambient expression of the robot's state or idle life) placed in the lanes of the
actuators it uses (see :mod:`.scheduler` for the scheduling). Its :class:`Outcome` says how it
ended. :func:`over_caps` is the robot's answer to a flood: the reason a new command may not be
queued, or ``None``.

Kinds: ``motion``, ``emotion``, ``pose`` (an emotion's servo pose) come from calls; ``return``
(back to neutral after an emotion's duration) and ``ambient`` (state expressions, idle motions)
are the robot's own, low priority: any later command on their actuators replaces them, and they
never wait behind one.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from dataclasses import dataclass, field
from typing import Any

from .config import ActuatorsConfig
from .plan import Plan

#: kinds a later command replaces instead of queueing behind
LOW_PRIORITY = frozenset({"return", "ambient"})


@dataclass
class Outcome:
    """How a motion/emotion call ended: ``done``, ``failed`` (with ``reason``), ``busy`` (not
    queued: a cap of ``[robot]``), ``not_shown`` (no actuator can show it) or ``dropped``."""

    status: str
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "detail": dict(self.detail)}


class Command:
    __slots__ = ("call_id", "detail", "future", "id", "kind", "plan", "response_id", "state", "tag", "task")

    def __init__(self, kind: str, tag: str, plan: Plan, response_id: str | None, call_id: str | None,
                 future: asyncio.Future[Outcome], detail: dict[str, Any]):
        self.id = next(_ids)
        self.kind, self.tag, self.plan = kind, tag, plan
        self.response_id, self.call_id = response_id, call_id
        self.future = future
        self.task: asyncio.Task[None] | None = None
        self.state = "queued"  # queued | running | finished
        self.detail = detail

    @property
    def low(self) -> bool:
        return self.kind in LOW_PRIORITY


_ids = itertools.count(1)


def is_kind(kind: str, cmd: Command) -> bool:
    return cmd.kind == kind


def over_caps(cfg: ActuatorsConfig, lanes: dict[str, collections.deque[Command]], cmd: Command) -> str | None:
    """Why ``cmd`` cannot be queued now (``[robot]``'s caps), or None."""
    for n in cmd.plan.actuators:
        lane = [c for c in lanes[n] if not c.low]
        if len(lane) >= cfg.max_queued:
            return f"actuator {n!r} has {len(lane)} commands waiting or running (robot.max_queued)"
        planned = sum(c.plan.total for c in lane) + cmd.plan.total
        if planned > cfg.max_queued_seconds:
            return (f"actuator {n!r} would have {planned:.0f} s of motion queued "
                    f"(robot.max_queued_seconds = {cfg.max_queued_seconds:g})")
    if cmd.response_id is not None:
        same = {id(c) for lane in lanes.values() for c in lane if c.response_id == cmd.response_id}
        if len(same) >= cfg.max_per_response:
            return (f"response {cmd.response_id} has {len(same)} commands waiting or running "
                    "(robot.max_per_response)")
    return None
