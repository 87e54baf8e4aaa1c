"""One serial port, owned by one writer thread that (re)opens it with backoff.

The event loop never touches pyserial: :meth:`SerialLink.write` checks the link is up and
puts the bytes on a queue (microseconds); the thread writes them, splitting long writes into
``chunk_size`` pieces with ``chunk_gap`` pauses for microcontrollers with a small receive
buffer. When a write or the idle poll fails (USB unplugged, pty closed, the by-id path gone)
the thread closes the port, marks the link ``reconnecting``, counts a fault, drops what was
queued (stale motion is worse than none) and retries with exponential backoff. While the link
is down, :meth:`write` raises :class:`DriverUnavailable` at once, so commands fail fast.

The backoff only starts again from its shortest delay once a connection has stayed up for
:data:`STABLE` seconds: a device that opens and dies at once (a crashing MCU, a flaky hub) is
retried ever more slowly, and after the first loss of such a streak the repeats are logged at
debug level. Every successful open calls the ``on_up`` listeners on the event loop
(``loop.call_soon_threadsafe``) with the open's number, so the actuator system can put a late
or replugged device in its safe state.

Ports are anything ``serial.serial_for_url`` accepts: ``/dev/ttyACM0``,
``/dev/serial/by-id/usb-...``, a pty slave path, or ``loop://`` (a virtual device that echoes
what it is sent; counted as simulated).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

import serial

from ..errors import DriverUnavailable

log = logging.getLogger(__name__)

POLL = 0.2  # idle health check period, seconds
CLOSE_SETTLE = 0.05  # seconds between the last write and closing the port at stop
STABLE = 10.0  # seconds a connection must last for the backoff to start short again
_STOP = object()


def is_virtual(port: str) -> bool:
    """``loop://`` and other URL handlers are not hardware."""
    return "://" in port


class SerialLink:
    def __init__(
        self,
        port: str,
        baud: int,
        *,
        label: str = "",
        handshake: str | None = None,
        handshake_reply: str | None = None,
        handshake_timeout: float = 1.0,
        newline: bytes = b"\n",
        chunk_size: int = 0,
        chunk_gap: float = 0.0,
        backoff: tuple[float, float] = (0.2, 5.0),
    ):
        self.port = port
        self.baud = baud
        self.label = label or port
        self.handshake = handshake
        self.handshake_reply = handshake_reply
        self.handshake_timeout = handshake_timeout
        self.newline = newline
        self.chunk_size = chunk_size
        self.chunk_gap = chunk_gap
        self.backoff = backoff
        self.state = "connecting"  # connecting | ok | reconnecting | closed
        self.error: str | None = None
        self.faults = 0
        self.opens = 0
        self.users = 0
        self.key = port
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._up_listeners: list[Callable[[int], None]] = []
        self._said: set[str] = set()  # messages logged at warning level in this unstable streak
        self._streak = 0  # connections lost since the last one that stayed up STABLE seconds

    @property
    def simulated(self) -> bool:
        return is_virtual(self.port)

    # --- loop side --------------------------------------------------------------------

    async def start(self, wait: float = 3.0) -> None:
        """Start the thread and wait (bounded) for the first open attempt. Never raises."""
        self._loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"ticos-serial-{self.label}", daemon=True)
            self._thread.start()
        await asyncio.to_thread(self._first.wait, wait + self.handshake_timeout)

    def add_up_listener(self, fn: Callable[[int], None]) -> None:
        """Call ``fn(opens)`` on the event loop after every successful open (not retroactively)."""
        self._up_listeners.append(fn)

    def remove_up_listener(self, fn: Callable[[int], None]) -> None:
        try:
            self._up_listeners.remove(fn)
        except ValueError:
            pass

    def write(self, data: bytes) -> None:
        if self.state != "ok":
            raise DriverUnavailable(f"serial port {self.port} is {self.state}" + (f": {self.error}" if self.error else ""))
        self._q.put(data)

    async def stop(self) -> None:
        self._stop.set()  # first: the thread must not reopen the port once it has left
        self._q.put(_STOP)  # after whatever is queued: the safe state still goes out
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 3.0)
        self.state = "closed"

    # --- thread side ------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            ser = None
            try:
                ser = self._open()
            except Exception as exc:
                self._down(f"cannot open: {exc}", first=True)
                if ser is not None:
                    self._close(ser)
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            self.opens += 1
            up_at = time.monotonic()
            self.state, self.error = "ok", None
            log.log(logging.INFO if self._streak <= 1 else logging.DEBUG,
                    "serial %s: open %s at %d baud", self.label, self.port, self.baud)
            self._first.set()
            self._notify_up(self.opens)
            lost = False
            try:
                self._serve(ser)
            except Exception as exc:
                self.faults += 1
                lost = True
                if time.monotonic() - up_at >= STABLE:
                    self._streak, delay = 0, self.backoff[0]
                    self._said.clear()
                self._streak += 1
                if self._streak == 2:
                    log.warning("serial %s: %s keeps dropping soon after opening; retrying ever more slowly "
                                "(up to every %g s), repeats logged at debug level", self.label, self.port, self.backoff[1])
                self._down(f"lost: {exc}")
                self._drain()
            finally:
                self._close(ser)
            if lost and not self._stop.is_set():
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff[1])
        self._first.set()

    def _notify_up(self, opens: int) -> None:
        loop = self._loop
        if loop is None:
            return
        for fn in list(self._up_listeners):
            try:
                loop.call_soon_threadsafe(fn, opens)
            except RuntimeError:  # the loop is closed: nobody to tell
                return

    def _down(self, error: str, first: bool = False) -> None:
        if error not in self._said and (self.state != "reconnecting" or self.error != error):
            self._said.add(error)
            log.warning("serial %s: %s %s (retrying with backoff)", self.label, self.port, error)
        else:
            log.debug("serial %s: %s %s (retrying with backoff)", self.label, self.port, error)
        self.state, self.error = "reconnecting", error
        if first:
            self._first.set()

    def _open(self) -> serial.SerialBase:
        ser = serial.serial_for_url(self.port, baudrate=self.baud, timeout=0, write_timeout=2.0)
        try:
            if self.handshake:
                ser.reset_input_buffer()
                ser.write(self.handshake.encode("ascii") + self.newline)
                ser.flush()
                if self.handshake_reply:
                    self._await_reply(ser)
        except BaseException:
            self._close(ser)
            raise
        return ser

    def _await_reply(self, ser: serial.SerialBase) -> None:
        deadline = time.monotonic() + self.handshake_timeout
        buf = b""
        while time.monotonic() < deadline:
            chunk = ser.read(256)
            if chunk:
                buf += chunk
                for line in buf.split(self.newline):
                    if self.handshake_reply.encode("ascii") in line:
                        return
            else:
                time.sleep(0.005)
        ser.close()
        raise DriverUnavailable(f"no handshake reply {self.handshake_reply!r} within {self.handshake_timeout:g} s")

    def _serve(self, ser: serial.SerialBase) -> None:
        path = None if is_virtual(self.port) else self.port
        while True:  # what was queued before stop() (the safe state) is written before _STOP
            try:
                item = self._q.get(timeout=POLL)
            except queue.Empty:
                # a timed get can report Empty although stop() has just queued the safe state
                # (it timed out while waiting for the GIL): only leave once the queue is empty
                if self._stop.is_set():
                    if self._q.empty():
                        self._settle(ser)
                        return
                    continue
                # idle health check: the device node is gone, or reading reports an error
                if path is not None and not os.path.exists(path):
                    raise OSError(f"{path} disappeared")
                data = ser.read(4096)
                if data:
                    log.debug("serial %s: read %r", self.label, data[:80])
                continue
            if item is _STOP:
                self._settle(ser)
                return
            self._write(ser, item)

    @staticmethod
    def _settle(ser: serial.SerialBase) -> None:
        """Let the last frames (the safe state) leave before the port closes: closing drops DTR
        (many boards reset on it) and a pty may discard what its peer has not read yet."""
        ser.flush()
        time.sleep(CLOSE_SETTLE)

    def _write(self, ser: serial.SerialBase, data: bytes) -> None:
        size = self.chunk_size
        if not size or len(data) <= size:
            ser.write(data)
            return
        for i in range(0, len(data), size):
            if i:
                time.sleep(self.chunk_gap)
            ser.write(data[i : i + size])
            ser.flush()

    def _drain(self) -> None:
        while True:
            try:
                if self._q.get_nowait() is _STOP:
                    self._stop.set()
            except queue.Empty:
                return

    @staticmethod
    def _close(ser: serial.SerialBase) -> None:
        try:
            ser.close()
        except Exception:
            pass


async def acquire(links: dict, port: str, baud: int, **kw) -> SerialLink:
    """The shared link for ``port`` (actuators on one bus share one port and thread)."""
    key = f"{port}#{kw.get('label', '')}" if is_virtual(port) else port  # virtual ports are never shared
    link = links.get(key)
    if link is None:
        link = links[key] = SerialLink(port, baud, **kw)
        link.key = key
        link.users = 1
        await link.start()
    else:
        link.users += 1
    return link


async def release(links: dict, link: SerialLink) -> None:
    link.users -= 1
    if link.users <= 0:
        links.pop(link.key, None)
        await link.stop()
