"""Serial ports and why one cannot be opened: `tigo-execd ports`, and the messages the bridge logs.

"Nothing arrives" is most often the wrong port, a port without permission, or a port another program
holds. This module answers those from sysfs and /dev (a root directory can be given, so tests and
chroots can point it at a fake tree) and turns an open() error into a message that says what to do.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tigo_execd import exitcodes
from tigo_execd.procfs import holders, read_text
from tigo_execd.systemd import group_name, user_name

if TYPE_CHECKING:
    from tigo_execd.cli import Subparsers

# Chips of the common USB RS-485 adapters (vendor ids): the ones a Tigo bus sniffer usually is.
RS485_VENDORS = {"0403": "FTDI", "1a86": "QinHeng CH34x", "10c4": "Silicon Labs CP210x",
                 "067b": "Prolific PL2303"}
TTY_NAMES = re.compile(r"tty(USB|ACM|AMA|S|XRUSB|CH343USB|THS|mxc|SC)\d+")
BY_ID = "dev/serial/by-id"


@dataclass
class Port:
    """One serial port as `ports` prints it."""

    device: str                                   # /dev/ttyUSB0 (as seen from the root given)
    by_id: list[str] = field(default_factory=list)
    vendor_id: str = ""
    product_id: str = ""
    manufacturer: str = ""
    product: str = ""
    access: str = ""                              # "ok" or why it cannot be opened

    @property
    def likely_rs485(self) -> bool:
        return self.vendor_id in RS485_VENDORS or "485" in self.product


def by_id_links(root: Path = Path("/")) -> dict[str, Path]:
    """/dev/serial/by-id names -> the device each points at (names that survive re-plugging)."""
    directory = root / BY_ID
    try:
        return {p.name: p.resolve() for p in sorted(directory.iterdir())}
    except OSError:
        return {}



def _usb_device(device: Path) -> Path | None:
    """The USB device directory above a tty's device (ttyUSB: two levels up, ttyACM: one)."""
    for parent in (device, *list(device.parents)[:3]):
        if (parent / "idVendor").exists():
            return parent
    return None


def scan(root: Path = Path("/")) -> list[Port]:
    """Serial ports that have hardware behind them (legacy ttyS placeholders are left out)."""
    links = by_id_links(root)
    ports = []
    try:
        entries = sorted((root / "sys/class/tty").iterdir(), key=lambda p: _natural(p.name))
    except OSError:
        return []
    for entry in entries:
        if not TTY_NAMES.fullmatch(entry.name) or not (entry / "device").exists():
            continue
        device = (entry / "device").resolve()
        if device.name == "serial8250":  # the kernel's placeholder ttyS ports with no UART behind
            continue
        dev = root / "dev" / entry.name
        port = Port(device=f"/dev/{entry.name}",
                    by_id=[f"/{BY_ID}/{name}" for name, target in links.items() if target == dev.resolve()],
                    access=check_access(dev))
        usb = _usb_device(device)
        if usb is not None:
            port.vendor_id, port.product_id = read_text(usb / "idVendor"), read_text(usb / "idProduct")
            port.manufacturer, port.product = read_text(usb / "manufacturer"), read_text(usb / "product")
        ports.append(port)
    return ports


def _natural(name: str) -> tuple[str, int]:
    m = re.fullmatch(r"(\D+)(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def check_access(dev: Path) -> str:
    """Open the port the way the bridge would (non-blocking, exclusive lock) and say what happened."""
    try:
        fd = os.open(dev, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        return short_reason(exc, str(dev))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return short_reason(exc, str(dev))
    finally:
        os.close(fd)
    return "ok"


def classify(exc: OSError) -> str:
    """open() error -> missing | permission | busy | other."""
    if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ENOTDIR):
        return "missing"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission"
    if exc.errno in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
        return "busy"
    return "other"




def _ownership(path: str) -> tuple[str, str, int] | None:
    """(owner, group, permission bits) of a device, names where the system has them."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return user_name(st.st_uid), group_name(st.st_gid), stat.S_IMODE(st.st_mode)


def access_group(path: str) -> tuple[str | None, str]:
    """The group whose members may open the device (None: no group may), and how it is set now."""
    owned = _ownership(path)
    if owned is None:
        return "dialout", "?"
    owner, group, mode = owned
    described = f"{owner}:{group} {mode:04o}"
    return (group if mode & 0o060 == 0o060 and group != "root" else None), described


def udev_rule(path: str) -> str:
    """A udev rule giving the adapter's tty group dialout, for every name the kernel gives it."""
    name = re.sub(r"\d+$", "[0-9]*", os.path.basename(os.path.realpath(path)))
    return f'SUBSYSTEM=="tty", KERNEL=="{name}", GROUP="dialout", MODE="0660"'


def short_reason(exc: OSError, path: str) -> str:
    kind = classify(exc)
    if kind == "permission":
        group, described = access_group(path)
        if group:
            return f"permission denied (join group {group})"
        return (f"permission denied ({described}: no group may open it; a udev rule must give it "
                f"group dialout: {udev_rule(path)})")
    if kind == "busy":
        holders = holders_of(path)
        return "busy" + (f" (held by {holders})" if holders else " (held by another program)")
    return os.strerror(exc.errno) if exc.errno else str(exc)


def explain(port: str, exc: OSError, root: Path = Path("/")) -> str:
    """The actionable message for a port that cannot be opened."""
    kind = classify(exc)
    if kind == "missing":
        links = by_id_links(root)
        listing = ", ".join(f"/{BY_ID}/{name}" for name in links) or "none (is the adapter plugged in?)"
        return (f"serial port {port} not found; /{BY_ID}/ has: {listing}. "
                f"`tigo-execd ports` lists the serial ports of this machine")
    if kind == "permission":
        group, described = access_group(port)
        name = group or "dialout"
        join = (f"add the user running tigo-execd to group {name} (`sudo usermod -aG {name} $USER`, "
                f"or `usermod -aG {name} telegraf` for the Telegraf service), then log in again or "
                f"restart the service")
        if group:
            return f"no permission to open {port}: {join}"
        return (f"no permission to open {port}: it is {described}, so no group may open it: add a "
                f"udev rule giving it group dialout, e.g. /etc/udev/rules.d/99-rs485.rules with "
                f"{udev_rule(port)}, apply it with `sudo udevadm control --reload && sudo udevadm "
                f"trigger` (or replug the adapter), and {join}")
    if kind == "busy":
        holders = holders_of(port)
        who = f"{holders} holds it" if holders else "another program holds it (maybe another taptap)"
        return f"serial port {port} is busy: {who}; see `fuser -v {port}`"
    return f"cannot open serial port {port}: {exc.strerror or exc}"



def holders_of(path: str) -> str:
    """'taptap (pid 123)' for the other processes holding a device, or '' when none is visible."""
    return ", ".join(holders(path)) if path else ""


def format_ports(ports: list[Port]) -> str:
    if not ports:
        return ("no serial ports found. Plug the RS-485 adapter in and look at `dmesg | tail` "
                "(a CH34x or CP210x may need its kernel module).\n")
    lines = []
    for p in ports:
        usb = f"{p.vendor_id}:{p.product_id}" if p.vendor_id else "-"
        desc = " ".join(s for s in (p.manufacturer, p.product) if s) or "-"
        hint = f"  <- likely RS-485 adapter ({RS485_VENDORS.get(p.vendor_id, 'RS-485')})" \
            if p.likely_rs485 else ""
        lines.append(f"{p.device:<14} {usb:<10} {desc}{hint}")
        lines.append(f"    open: {p.access}")
        lines.extend(f"    by-id: {name}" for name in p.by_id)
    if any(p.by_id for p in ports):
        lines.append("Use the /dev/serial/by-id/ name in --serial: it stays the same across re-plugging.")
    return "\n".join(lines) + "\n"


def register(sub: Subparsers) -> None:
    from tigo_execd.cli import add_log_level

    p = sub.add_parser("ports", help="list serial ports, their USB adapters and whether they open",
                       description="List serial ports with their /dev/serial/by-id names, USB "
                                   "vendor:product, and whether this user can open them (each port "
                                   "is opened briefly). Likely RS-485 adapters are pointed out.")
    p.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)  # tests, chroots
    add_log_level(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    print(format_ports(scan(args.root)), end="")
    return exitcodes.OK
