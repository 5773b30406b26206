"""`tigo-execd ports` and the open-error messages, on a fake sysfs/dev tree whose device nodes are
real pseudo-terminals (so "ok", "busy" and "permission denied" come from the kernel), and on this
machine as it is."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import subprocess
from pathlib import Path

import pytest

from support.paths import ROOT
from support.proc import tigo_execd_argv
from support.serial_pty import DIALOUT, NO_DAC, NOBODY, Pty
from tigo_execd.bus import ports

BY_ID_NAME = "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"


def usb_tty(root: Path, name: str, usb: str, ids: dict[str, str], acm: bool = False) -> None:
    """sysfs as the kernel lays out a USB serial port: ttyUSB under its interface's port directory,
    ttyACM right under the interface; the USB device directory holds idVendor and friends."""
    device = root / "sys/devices/pci0000:00/0000:00:14.0/usb1" / usb
    device.mkdir(parents=True)
    for key, value in ids.items():
        (device / key).write_text(value + "\n")
    port_dir = device / f"{usb}:1.0" if acm else device / f"{usb}:1.0" / name
    class_dir = port_dir / "tty" / name
    class_dir.mkdir(parents=True)
    (class_dir / "device").symlink_to(port_dir)
    (root / "sys/class/tty" / name).symlink_to(class_dir)


def other_tty(root: Path, name: str, device: str | None) -> None:
    class_dir = root / "sys/devices" / (device or "virtual") / "tty" / name
    class_dir.mkdir(parents=True)
    if device:
        (class_dir / "device").symlink_to(root / "sys/devices" / device)
    (root / "sys/class/tty" / name).symlink_to(class_dir)


def fake_machine(tmp_path: Path) -> tuple[Path, dict[str, Pty]]:
    root = tmp_path / "root"
    (root / "sys/class/tty").mkdir(parents=True)
    (root / "dev/serial/by-id").mkdir(parents=True)
    ptys = {name: Pty() for name in ("ttyUSB0", "ttyUSB1", "ttyACM0")}
    for name, pty in ptys.items():
        (root / "dev" / name).symlink_to(pty.path)
    usb_tty(root, "ttyUSB0", "1-2", {"idVendor": "0403", "idProduct": "6001",
                                     "manufacturer": "FTDI", "product": "FT232R USB UART"})
    usb_tty(root, "ttyUSB1", "1-3", {"idVendor": "1a86", "idProduct": "7523",
                                     "product": "USB Serial"})
    usb_tty(root, "ttyACM0", "1-4", {"idVendor": "2341", "idProduct": "0043",
                                     "manufacturer": "Arduino (www.arduino.cc)"}, acm=True)
    other_tty(root, "ttyS0", "pnp0/00:05")           # a real UART, its /dev node missing here
    other_tty(root, "ttyS4", "platform/serial8250")  # the kernel's placeholder: not listed
    other_tty(root, "tty1", None)                     # a virtual console: not listed
    (root / "dev/serial/by-id" / BY_ID_NAME).symlink_to("../../ttyUSB0")
    return root, ptys


def test_ports_lists_real_ports_with_usb_ids_by_id_names_and_access(tmp_path):
    root, ptys = fake_machine(tmp_path)
    os.chown(ptys["ttyACM0"].path, NOBODY, DIALOUT)
    os.chmod(ptys["ttyACM0"].path, 0o660)
    holder = os.open(ptys["ttyUSB1"].path, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        result = subprocess.run([*NO_DAC, *tigo_execd_argv("ports", "--root", str(root))],
                                capture_output=True, text=True, cwd=ROOT, timeout=30,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(holder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "/dev/ttyACM0   2341:0043  Arduino (www.arduino.cc)",
        "    open: permission denied (join group dialout)",
        "/dev/ttyS0     -          -",
        "    open: No such file or directory",
        "/dev/ttyUSB0   0403:6001  FTDI FT232R USB UART  <- likely RS-485 adapter (FTDI)",
        "    open: ok",
        f"    by-id: /dev/serial/by-id/{BY_ID_NAME}",
        "/dev/ttyUSB1   1a86:7523  USB Serial  <- likely RS-485 adapter (QinHeng CH34x)",
        f"    open: busy (held by {Path('/proc/self/comm').read_text().strip()} (pid {os.getpid()}))",
        "Use the /dev/serial/by-id/ name in --serial: it stays the same across re-plugging.",
    ]


def test_no_ports_says_what_to_look_at(tmp_path):
    assert ports.scan(tmp_path) == []
    assert "no serial ports found" in ports.format_ports([])


def test_ports_on_this_machine_runs_and_lists_only_existing_devices():
    result = subprocess.run(tigo_execd_argv("ports"), capture_output=True, text=True, cwd=ROOT,
                            timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and result.stderr == ""
    for port in ports.scan():
        assert Path(port.device).exists()


def test_not_found_lists_the_by_id_names(tmp_path):
    root, _ = fake_machine(tmp_path)
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory")
    msg = ports.explain("/dev/ttyUSB7", missing, root)
    assert msg.startswith("serial port /dev/ttyUSB7 not found; /dev/serial/by-id/ has: "
                          f"/dev/serial/by-id/{BY_ID_NAME}.")
    assert "`tigo-execd ports`" in msg
    assert "none (is the adapter plugged in?)" in ports.explain("/dev/x", missing, tmp_path)


def test_error_kinds_come_from_real_os_errors(tmp_path):
    with pytest.raises(OSError) as missing:
        os.open(tmp_path / "absent", os.O_RDONLY)
    assert ports.classify(missing.value) == "missing"
    pty = Pty()
    fd = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    other = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
    try:
        with pytest.raises(OSError) as busy:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert ports.classify(busy.value) == "busy"
        assert f"pid {os.getpid()}" not in ports.explain(pty.path, busy.value)  # itself is no holder
    finally:
        os.close(other)
        os.close(fd)


def test_a_device_no_group_may_open_gets_a_udev_rule_not_dialout(tmp_path):
    """root:root 0600 (an adapter no udev rule knows): joining dialout would change nothing."""
    root, ptys = fake_machine(tmp_path)
    os.chown(ptys["ttyUSB0"].path, NOBODY, 0)
    os.chmod(ptys["ttyUSB0"].path, 0o600)
    result = subprocess.run([*NO_DAC, *tigo_execd_argv("ports", "--root", str(root))],
                            capture_output=True, text=True, cwd=ROOT, timeout=30,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rule = 'SUBSYSTEM=="tty", KERNEL=="ttyUSB[0-9]*", GROUP="dialout", MODE="0660"'
    pts = os.path.basename(ptys["ttyUSB0"].path)  # the rule names the kernel's name of the device
    rule = rule.replace("ttyUSB[0-9]*", re.sub(r"\d+$", "[0-9]*", pts))
    assert lines[lines.index("/dev/ttyUSB0   0403:6001  FTDI FT232R USB UART  <- likely RS-485 "
                             "adapter (FTDI)") + 1] == (
        "    open: permission denied (nobody:root 0600: no group may open it; a udev rule must "
        f"give it group dialout: {rule})")
    msg = ports.explain(str(root / "dev/ttyUSB0"), PermissionError(errno.EACCES, "denied"))
    assert "join" not in msg and "so no group may open it: add a udev rule" in msg
    assert f"/etc/udev/rules.d/99-rs485.rules with {rule}" in msg and "udevadm trigger" in msg
