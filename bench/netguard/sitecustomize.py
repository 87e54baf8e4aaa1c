"""Network guard for the benchmark's anchor processes (put this folder on ``PYTHONPATH``).

The ticos-client 0.7.2 anchor of ``bench/load.py`` is third-party code that can reach for its
cloud (config fetch, variables upload, memory summaries, a realtime WebSocket). In a benchmark
nothing may leave the machine, so this module, imported at interpreter start as
``sitecustomize``:

- refuses ``socket.connect``/``connect_ex`` to any address that is not loopback (or a unix
  socket) with ``ConnectionRefusedError``;
- refuses to resolve host names other than ``localhost`` (a DNS query is itself traffic);
- rewrites a bind to a wildcard address (``0.0.0.0``, ``::``, ``""``) to loopback;

and writes one line per attempt to ``$BENCH_NETGUARD_LOG`` (or stderr), so the bench can
report what the SDK tried. Servers created by uvloop/libuv bind outside Python's ``socket``
module: the serving script pins those to loopback itself, and ``bench/load.py`` checks the
listening address of every server it starts.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time
import traceback

_LOG = os.environ.get("BENCH_NETGUARD_LOG")
_orig_connect = socket.socket.connect
_orig_connect_ex = socket.socket.connect_ex
_orig_bind = socket.socket.bind
_orig_getaddrinfo = socket.getaddrinfo


def _note(what: str) -> None:
    caller = ""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "netguard" not in frame.filename and "/socket.py" not in frame.filename:
            caller = f" (from {frame.filename}:{frame.lineno} {frame.name})"
            break
    line = f"{time.strftime('%H:%M:%S')} netguard: {what}{caller}\n"
    try:
        if _LOG:
            with open(_LOG, "a") as f:
                f.write(line)
        else:
            sys.stderr.write(line)
    except OSError:
        pass


def _local_host(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _allowed(sock: socket.socket, address) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # unix sockets, netlink: not the network
    return isinstance(address, tuple) and _local_host(address[0])


def connect(self, address):
    if not _allowed(self, address):
        _note(f"refused connect to {address!r}")
        raise ConnectionRefusedError(111, f"netguard: outbound connection to {address!r} refused")
    return _orig_connect(self, address)


def connect_ex(self, address):
    if not _allowed(self, address):
        _note(f"refused connect_ex to {address!r}")
        return 111
    return _orig_connect_ex(self, address)


def bind(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) \
            and address[0] in ("", "0.0.0.0", "::"):
        loop = "127.0.0.1" if self.family == socket.AF_INET else "::1"
        _note(f"bind to {address!r} rewritten to {loop}")
        address = (loop, *address[1:])
    return _orig_bind(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _local_host(host):
        _note(f"refused to resolve {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"netguard: name resolution of {host!r} refused")
    return _orig_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.socket.bind = bind
socket.getaddrinfo = getaddrinfo
