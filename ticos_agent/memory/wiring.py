"""How the agent starts the memory parts: session_config, memory rounds, priming.

:func:`start_memory` runs once per agent start, after storage and the intake: it writes the
voice agent's session_config (the card's copy preferred when storage is on the card), adds
the round counter (:class:`~.generation.MemoryGeneration`) and, with ``[memory] prime``, the
:class:`~.priming.Primer` to the intake, and registers the stop (cancel a running round,
write session_config once more) on the agent's exit stack, so it runs before storage closes.
With storage off nothing is remembered: it returns ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from ..connection import Send
from .config import MemoryConfig
from .generation import EmitMemory, MemoryGeneration
from .session_config import SessionConfig

if TYPE_CHECKING:
    from ..intake import Intake
    from ..storage import Store
    from .summariser import Summariser

log = logging.getLogger(__name__)


async def start_memory(store: Store | None, cfg: MemoryConfig, intake: Intake, stack: AsyncExitStack, *,
                       send: Send, spawn: Callable[[Coroutine[Any, Any, Any]], object], emit: EmitMemory,
                       side_task: Callable[[str | None, str | None], bool],
                       summariser: Summariser | None = None) -> MemoryGeneration | None:
    if store is None:
        if cfg.generation != "off" or cfg.prime != "off" or summariser is not None:
            log.warning("memory: storage is off, so nothing is remembered (no generation, no priming)")
        return None
    from ..storage import SaveMode

    session = None
    if cfg.session_config:
        location = store.location
        card = location.path.parent / "session_config" if location.mode is SaveMode.EXTERNAL else None
        session = SessionConfig(store, cfg.session_file, count=cfg.history_rounds, card=card,
                                quiet=cfg.session_config_quiet)
        await session.refresh()
    memory = MemoryGeneration(store, cfg, side_task=side_task, summariser=summariser, emit=emit, session=session)
    memory.announce()
    stack.push_async_callback(_stop, memory)
    intake.add(memory, "MemoryRounds")
    if cfg.prime != "off":
        from .priming import Primer  # (loaded only with priming on)

        intake.add(Primer(store, role=cfg.prime, rounds=cfg.prime_rounds, send=send, spawn=spawn))
    return memory


async def _stop(memory: MemoryGeneration) -> None:
    await memory.stop()
    log.info("memory: stopped")
