"""``ticos-agent doctor``: what this machine offers the agent, one line per check."""

from __future__ import annotations

import glob
import os
import socket
from pathlib import Path


def _check(name: str, ok: bool | None, detail: str) -> bool:
    mark = {True: "ok  ", False: "FAIL", None: "note"}[ok]
    print(f"[{mark}] {name}: {detail}")
    return ok is not False


def main(config_path: str | None = None) -> int:
    good = True
    from .config import ConfigErrors, load

    try:
        config = load(config_path)
        _check("config", True, config.source)
    except ConfigErrors as exc:
        _check("config", False, str(exc))
        return 1
    host, port = config.server.host, config.server.port
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
            good &= _check(f"port {port}", True, f"free on {host}")
        except OSError as exc:
            good &= _check(f"port {port}", False, f"cannot bind {host}:{port}: {exc.strerror} (another agent running?)")
    from .storage import find_tf_root

    storage = config.storage
    internal = storage.internal_dir
    good &= _check("internal storage", os.access(internal if internal.exists() else internal.parent, os.W_OK) or None,
                   str(internal))
    card = Path(storage.tf_root) if storage.tf_root else find_tf_root()
    if storage.mode == "external":
        good &= _check("TF card", bool(card and os.access(card, os.W_OK)),
                       f"{card} (storage.mode = external)" if card else "none mounted under /media or /mnt "
                       "(storage.mode = external: the agent will fall back to internal storage)")
    else:
        _check("TF card", True if card else None, str(card) if card else "none mounted under /media or /mnt")
    ports = sorted({*glob.glob("/dev/serial/by-id/*"), *glob.glob("/dev/serial[0-9]"), *glob.glob("/dev/ttyUSB*"),
                    *glob.glob("/dev/ttyACM*"), *glob.glob("/dev/ttyAMA*")})
    _check("serial ports", True if ports else None, ", ".join(ports) or "none found (motions will be simulated)")
    if config.actuators is not None:
        for name, act in config.actuators.actuators.items():
            port_name = act.options.get("port")
            if isinstance(port_name, str) and port_name.startswith("/dev/"):
                here = os.path.exists(port_name)
                good &= _check(f"serial port of {name}", here and os.access(port_name, os.R_OK | os.W_OK),
                               port_name if here else f"{port_name} does not exist (unplugged? wrong name?)")
    gpio = os.path.exists("/dev/gpiochip0")
    _check("GPIO", True if gpio else None,
           "/dev/gpiochip0 present" if gpio else "no GPIO chip (mock pins will be used)")
    try:
        import sounddevice as sd

        device = sd.query_devices(kind="output")
        _check("audio", True, f"PortAudio {sd.get_portaudio_version()[1]}; default output: {device['name']}")
    except OSError as exc:
        _check("audio", None, f"PortAudio missing ({exc}); apt-get install libportaudio2")
    except Exception as exc:
        _check("audio", None, f"no output device: {exc}")
    from .actuators.registry import FAILED, available

    drivers = available()  # reads the plug-ins too
    _check("drivers", True, ", ".join(drivers))
    for name, why in FAILED.items():
        _check(f"driver plug-in {name}", None, f"failed to load, skipped: {why}")
    if config.actuators is not None:
        for name, act in config.actuators.actuators.items():
            problems = drivers[act.driver].check_environment(act.options)
            detail = "; ".join(problems) if problems else f"{act.driver}{' (simulated)' if act.simulated else ''}"
            good &= _check(f"actuator {name}", not problems, detail)
    return 0 if good else 1
