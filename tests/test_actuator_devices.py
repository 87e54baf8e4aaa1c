"""The device emulators on the far end of a pty must catch what they are there to catch."""

from __future__ import annotations

import os
import time

from devices import feetech_decode, line_decode, lx16a_decode

# --- the emulators must catch what they are there to catch --------------------------------


def test_feetech_decoder_checks_checksums():
    good = bytes.fromhex("ff ff 01 04 03 2a 00 cd")  # chk = ~(1+4+3+42+0) = 0xcd
    bad = good[:-1] + b"\x00"
    frames = feetech_decode(bytearray(b"\x00" + good + bad))
    assert frames == [(good, True), (bad, False)]


def test_lx16a_decoder_checks_checksums():
    # MOVE_TIME_WRITE id 1 to 500 in 1000 ms, checksum from the Hiwonder manual's formula
    body = [1, 7, 1, 0xF4, 0x01, 0xE8, 0x03]
    good = bytes([0x55, 0x55, *body, ~sum(body) & 0xFF])
    assert lx16a_decode(bytearray(good)) == [(good, True)]
    assert lx16a_decode(bytearray(good[:-1] + b"\x01")) == [(good[:-1] + b"\x01", False)]


def test_pty_device_sees_writes_from_the_slave(pty_device):
    dev = pty_device(line_decode, replies={"HELLO": "READY"})
    fd = os.open(dev.path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"HELLO\n")
        assert dev.wait_frames(1) == ["HELLO"]
        deadline = time.monotonic() + 2
        got = b""
        while b"READY\n" not in got and time.monotonic() < deadline:
            got += os.read(fd, 64)
        assert got == b"READY\n"
    finally:
        os.close(fd)
