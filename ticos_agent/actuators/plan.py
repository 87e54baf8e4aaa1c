"""Calls -> timed steps: what each actuator is told, and when, relative to the start.

A :class:`Step` is ``(t, seq, actuator, op, args)`` where ``op`` is a driver method
(``move``, ``light``, ``line``, ``safe``). Plans are pure: they read the config and the
call's arguments and touch no hardware, so they are easy to test and to print.

An emotion's ``duration`` is not part of its command: the command ends once the expression is
shown (fade-in, pose move-in), so a motion can use the same actuators while it holds (a nod
while "happy"). The way back to neutral is in :attr:`Plan.returns`: per actuator, when (from
the command's start) and the plan to run then, as a separate low-priority command that any
later command on that actuator replaces.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ..arguments import EmotionArgs, MotionArgs
from .config import ActuatorsConfig
from .library import Expression, Motion

FADE_STEP = 0.02  # seconds between brightness steps of a fade-in
POSE_SECONDS = 0.3  # move time of an emotion's pose (at least the fade-in)

_seq = itertools.count()


@dataclass(order=True)
class Step:
    t: float
    seq: int
    actuator: str = field(compare=False)
    op: str = field(compare=False)
    args: tuple[Any, ...] = field(compare=False, default=())


def step(t: float, actuator: str, op: str, *args: Any) -> Step:
    return Step(t, next(_seq), actuator, op, args)


@dataclass
class Plan:
    steps: list[Step]
    total: float
    actuators: list[str]
    #: actuator -> (seconds after the command's start, the plan that returns it to neutral)
    returns: dict[str, tuple[float, Plan]] = field(default_factory=dict)


def plan_motion(cfg: ActuatorsConfig, motion: Motion, args: MotionArgs) -> Plan:
    steps: list[Step] = []
    total = 0.0
    speed, repeat = args.speed, args.repeat
    for name, frames in motion.tracks.items():
        a = cfg.actuators[name]
        period = frames[-1].t
        for r in range(repeat):
            prev = 0.0
            for f in frames:
                steps.append(step((r * period + prev) / speed, name, "move", a.clamp(f.target), (f.t - prev) / speed))
                prev = f.t
        total = max(total, period * repeat / speed)
    for name, seconds in motion.played.items():
        steps.append(step(0.0, name, "line", "motion", {"tag": motion.tag, "speed": speed, "repeat": repeat}))
        total = max(total, seconds * repeat / speed)
    return Plan(sorted(steps), total, list(dict.fromkeys([*motion.tracks, *motion.played])))


def restrict(plan: Plan, names: Collection[str]) -> Plan:
    """``plan`` on the actuators in ``names`` only (all of them when ``names`` is empty)."""
    if not names:
        return plan
    keep = set(names)
    return Plan([s for s in plan.steps if s.actuator in keep], plan.total, [a for a in plan.actuators if a in keep],
                {a: r for a, r in plan.returns.items() if a in keep})


def expression_actuators(cfg: ActuatorsConfig) -> list[str]:
    """Actuators whose driver shows expressions (lights, MCUs with an ``emotion`` line). A light
    that is the mouth is left out (its brightness is the voice's loudness); an MCU that also
    moves the mouth still shows every emotion on its own line."""
    return [n for n, a in cfg.actuators.items()
            if a.shows_expressions and not (n == cfg.mouth and a.kind == "light")]


def _line_values(e: Expression, intensity: float, args: EmotionArgs | None) -> dict[str, Any]:
    r, g, b = (round(c * 255) for c in (e.color or (1.0, 1.0, 1.0)))
    return {
        "tag": e.tag, "intensity": round(intensity, 2), "face": e.face or e.tag, "r": r, "g": g, "b": b,
        "brightness": round(e.brightness * intensity, 2), "pattern": e.pattern,
        "duration": (args.duration or 0.0) if args else 0.0, "fade_in": args.fade_in if args else 0.0,
    }


def _show(cfg: ActuatorsConfig, name: str, t: float, e: Expression, intensity: float,
          args: EmotionArgs | None = None) -> list[Step]:
    if cfg.actuators[name].kind == "line":
        return [step(t, name, "line", "emotion", _line_values(e, intensity, args))]
    return [step(t, name, "light", e.color or (1.0, 1.0, 1.0), e.brightness * intensity, e.pattern, e.period)]


def neutral_steps(cfg: ActuatorsConfig, name: str, neutral: Expression | None) -> list[Step]:
    """What a light (or an MCU's emotion line) shows at rest: ``neutral``, else its safe state."""
    return _show(cfg, name, 0.0, neutral, 1.0) if neutral is not None else [step(0.0, name, "safe")]


def plan_expression(cfg: ActuatorsConfig, e: Expression, args: EmotionArgs, neutral: Expression | None) -> Plan:
    names = expression_actuators(cfg)
    fade, level = args.fade_in, e.brightness * args.intensity
    steps: list[Step] = []
    for n in names:
        if cfg.actuators[n].kind != "light":
            steps += _show(cfg, n, 0.0, e, args.intensity, args)  # the MCU fades by itself ({fade_in})
            continue
        if fade > 0:
            count = max(1, math.ceil(fade / FADE_STEP))
            for k in range(count):
                steps.append(step(fade * k / count, n, "light", e.color or (1.0, 1.0, 1.0), level * k / count,
                                  "solid", 1.0))
        steps += _show(cfg, n, fade, e, args.intensity, args)
    returns = {}
    if args.duration is not None:
        for n in names:
            returns[n] = (fade + args.duration, Plan(neutral_steps(cfg, n, neutral), 0.0, [n]))
    return Plan(sorted(steps), fade, names, returns)


def plan_pose(cfg: ActuatorsConfig, e: Expression, args: EmotionArgs, neutral: Expression | None) -> Plan:
    steps: list[Step] = []
    returns = {}
    seconds = max(args.fade_in, POSE_SECONDS)
    for n, target in e.pose.items():
        a = cfg.actuators[n]
        scaled = [h + (v - h) * args.intensity for v, h in zip(target, a.home)]
        steps.append(step(0.0, n, "move", a.clamp(scaled), seconds))
        if args.duration is not None:
            back = neutral.pose.get(n, a.home) if neutral is not None else a.home
            back_plan = Plan([step(0.0, n, "move", a.clamp(back), POSE_SECONDS)], POSE_SECONDS, [n])
            returns[n] = (seconds + args.duration, back_plan)
    return Plan(sorted(steps), seconds if steps else 0.0, list(e.pose), returns)
