"""The one error hierarchy of ticos-agent.

Every error the agent raises on purpose derives from :class:`TicosError`; each leaf also
derives from the builtin an integrator would naturally catch (``ValueError`` for bad data,
``OSError`` for storage, ``RuntimeError`` for hardware), so ``except ValueError`` keeps
working around code that validates input.
"""

from __future__ import annotations


class TicosError(Exception):
    """Root of every error ticos-agent raises on purpose."""


class BadEvent(TicosError, ValueError):
    """A realtime frame or event that cannot be used.

    ``code`` is a short machine-readable reason sent back to the voice agent in an ``error``
    event; ``event_id`` is the offending event's id when it could be read.
    """

    def __init__(self, message: str, *, code: str = "invalid_event", event_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.event_id = event_id


class BadArguments(BadEvent):
    """Function-call arguments that are missing, of the wrong type or out of range.

    ``field`` names the offending argument (``None`` when the whole object is wrong).
    """

    def __init__(self, message: str, *, field: str | None = None, event_id: str | None = None):
        super().__init__(message, code="invalid_arguments", event_id=event_id)
        self.field = field


class ConfigError(TicosError, ValueError):
    """A configuration value that cannot be used; names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, expected: str):
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"{key}: got {value!r}, expected {expected}")


class ConfigErrors(ConfigError):
    """Every problem of a config at once: ``errors`` holds each :class:`ConfigError`.

    It is itself a :class:`ConfigError` whose ``key``/``value``/``expected`` are the first
    problem's, so ``except ConfigError`` around a parser keeps working; the message lists
    them all, one per line.
    """

    def __init__(self, errors: list[ConfigError], source: str = "config"):
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        self.errors = list(errors)
        self.source = source
        first = self.errors[0]
        self.key, self.value, self.expected = first.key, first.value, first.expected
        lines = "\n".join(f"  - {e}" for e in self.errors)
        Exception.__init__(self, f"{source} has {len(self.errors)} error(s):\n{lines}")


class BadMemory(TicosError, ValueError):
    """A memory or a memory search that cannot be used: an unknown kind, empty or too long
    content, a value out of range, a query with no words. ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class StorageError(TicosError, OSError):
    """The database could not be opened, read or written."""


class StoreClosed(StorageError):
    """The store was closed: it takes no more records (expected while the agent stops, or
    after its owner closed it; the intake's consumers go on without storing)."""


class ActuatorError(TicosError, RuntimeError):
    """An actuator or its driver failed, or a command could not be carried out."""


class UnknownTag(ActuatorError, LookupError):
    """A motion or emotion tag that the configured library does not know."""

    def __init__(self, kind: str, tag: str, known: list[str]):
        self.kind = kind
        self.tag = tag
        self.known = sorted(known)
        super().__init__(f"unknown {kind} tag {tag!r}; known: {', '.join(self.known) or '(none)'}")


class DriverUnavailable(ActuatorError):
    """The driver's device is absent or disconnected right now (it may come back)."""


class AudioError(TicosError, RuntimeError):
    """Audio output is unavailable or failed."""


class BadAudio(BadEvent):
    """An audio delta that is not usable PCM16 (not base64, odd length, empty)."""

    def __init__(self, message: str, *, event_id: str | None = None):
        super().__init__(message, code="invalid_audio", event_id=event_id)


def describe(exc: BaseException) -> str:
    """A short human reason for ``exc`` for a log line: its class and message."""
    return f"{type(exc).__name__}: {exc}"
