"""What the kernel's /proc (and /sys) tell about other processes and devices: their parents, the
files and sockets they hold.

Only processes this user may inspect are seen (all of them for root); whatever cannot be read
counts as "not known", never as an error.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path


def read_text(path: Path) -> str:
    """A kernel text file's content, stripped ("" when it cannot be read)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def processes_with(target: str) -> list[int]:
    """Pids of processes with an open file descriptor whose link reads `target` (like fuser)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def comm(pid: int) -> str:
    """The process's program name ("" when it cannot be read)."""
    return read_text(Path(f"/proc/{pid}/comm"))


def ancestors(pid: int) -> Iterator[int]:
    """The parent, grandparent, ... of a process, up to init (1) or to the first one not visible (0)."""
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pid = 0
        yield pid


def descends_from(pid: int, ancestor: int) -> bool:
    return ancestor in ancestors(pid)


def runs_under(pid: int, program: str) -> bool:
    """True when the process or one of its ancestors (init aside) is `program`."""
    return any(comm(p) == program for p in (pid, *ancestors(pid)) if p > 1)


def holders(device: str, outside: str = "") -> list[str]:
    """"name (pid N)" of each other process holding the device open, leaving out those running
    under the program `outside` (doctor: the service's own taptap)."""
    return [f"{comm(pid) or '?'} (pid {pid})" for pid in processes_with(os.path.realpath(device))
            if pid != os.getpid() and not (outside and runs_under(pid, outside))]


def _net_tcp_address(host: str, port: int) -> str:
    """IPv4 host:port as /proc/net/tcp writes it (the address in host byte order, in hex)."""
    return f"{struct.unpack('=I', socket.inet_aton(host))[0]:08X}:{port:04X}"


def connecting_pid(host: str, peer_port: int, server_port: int) -> int | None:
    """The process owning the client end of a connection to our server on IPv4 `host`, when visible.

    TCP has no peer credentials, so the client socket's inode is looked up in /proc/net/tcp and
    then among the processes' open files."""
    want = (_net_tcp_address(host, peer_port), _net_tcp_address(host, server_port))
    try:
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return None
    inodes = [row[9] for row in rows if (row[1], row[2]) == want and row[9] != "0"]
    pids = processes_with(f"socket:[{inodes[0]}]") if inodes else []
    return pids[0] if pids else None
