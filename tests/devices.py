"""Device emulators on the far end of a pseudo-terminal, and tests of the emulators themselves.

A :class:`PtyDevice` owns the master side of ``os.openpty()``; the agent opens the slave's
path (or a by-id style symlink to it) like any serial port. A reader thread timestamps every
read and a decoder turns the byte stream into frames, verifying checksums: a bad checksum is
recorded in ``errors`` and fails the test that looks.
"""

from __future__ import annotations

import os
import threading
import time
import tty


def feetech_decode(buf: bytearray):
    """Pop complete ``FF FF id len instr params chk`` frames; returns [(frame, ok)]."""
    out = []
    while True:
        i = buf.find(b"\xff\xff")
        if i < 0 or len(buf) < i + 4:
            return out
        del buf[:i]
        length = buf[3]
        if len(buf) < 4 + length:
            return out
        frame = bytes(buf[: 4 + length])
        del buf[: 4 + length]
        ok = (~sum(frame[2:-1]) & 0xFF) == frame[-1]
        out.append((frame, ok))


def lx16a_decode(buf: bytearray):
    out = []
    while True:
        i = buf.find(b"\x55\x55")
        if i < 0 or len(buf) < i + 4:
            return out
        del buf[:i]
        length = buf[3]
        if len(buf) < 3 + length:
            return out
        frame = bytes(buf[: 3 + length])
        del buf[: 3 + length]
        ok = (~sum(frame[2:-1]) & 0xFF) == frame[-1]
        out.append((frame, ok))


def maestro_decode(buf: bytearray):
    out = []
    while len(buf) >= 4:
        frame = bytes(buf[:4])
        del buf[:4]
        ok = frame[0] == 0x84 and all(b < 0x80 for b in frame[1:])
        out.append((frame, ok))
    return out


def line_decode(buf: bytearray):
    out = []
    while b"\n" in buf:
        i = buf.index(b"\n")
        out.append((bytes(buf[:i]).decode("ascii"), True))
        del buf[: i + 1]
    return out


class PtyDevice:
    """The microcontroller / servo bus on the master side of a pty."""

    def __init__(self, decode=feetech_decode, replies: dict[str, str] | None = None, link: str | None = None):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.decode = decode
        self.replies = replies or {}
        self.reads: list[tuple[float, bytes]] = []
        self.frames: list[tuple[float, object]] = []
        self.errors: list[bytes] = []
        self._buf = bytearray()
        self._stop = False
        self.link = link
        if link:
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(self.path, link)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> str:
        return self.link or self.path

    def _run(self) -> None:
        import select

        while not self._stop:
            try:
                r, _, _ = select.select([self.master], [], [], 0.05)
                if not r:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            now = time.monotonic()
            self.reads.append((now, data))
            self._buf += data
            for frame, ok in self.decode(self._buf):
                if not ok:
                    self.errors.append(frame)
                self.frames.append((now, frame))
                reply = self.replies.get(frame) if isinstance(frame, str) else None
                if reply is not None:
                    os.write(self.master, reply.encode() + b"\n")

    def wait_frames(self, n: int, timeout: float = 3.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.frames) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return [f for _, f in self.frames]

    def unplug(self) -> None:
        """The cable is pulled: the by-id link vanishes and the device side closes."""
        self._stop = True
        if self.link and os.path.lexists(self.link):
            os.unlink(self.link)
        self._thread.join(1)
        os.close(self.master)

    def close(self) -> None:
        if not self._stop:
            self.unplug()
        try:
            os.close(self.slave)
        except OSError:
            pass
