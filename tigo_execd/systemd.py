"""How systemd starts a service: its EnvironmentFile, its unit drop-ins, the user it runs as.

`doctor` judges from the service's point of view, not the caller's; these read what systemd reads.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's default
SERVICE_STATE_DIR = Path("/var/lib/tigo-execd")  # StateDirectory=tigo-execd of the shipped drop-in


def state_dir() -> Path:
    """Where tigo-execd keeps its state (node registry, journal): the unit's StateDirectory= when
    systemd gives one, else the XDG state directory of the user running it."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "tigo-execd"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them (comments, optional quotes).

    ValueError when the file is not UTF-8 text; OSError when it cannot be read.
    """
    env = {}
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip().removeprefix("export ").strip()] = value
    return env


def drop_in_settings(unit_dir: Path, key: str) -> list[tuple[Path, str]]:
    """(drop-in, value) of each `key=value` line in a unit's drop-in directory, in systemd's order.

    A drop-in that cannot be read is left out: systemd cannot use it either."""
    out = []
    for conf in sorted(unit_dir.glob("*.conf")) if unit_dir.is_dir() else []:
        try:
            text = conf.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            name, _, value = line.strip().partition("=")
            if name.strip() == key:
                out.append((conf, value))
    return out


def group_name(gid: int) -> str:
    """The group's name, or the number when the system has no name for it."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def user_name(uid: int) -> str:
    """The user's name, or the number when the system has no name for it."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass
class ServiceUser:
    """A service's user as systemd runs it: its uid and every group it gets."""

    name: str
    uid: int
    gids: dict[int, str]  # gid -> how it is granted

    @classmethod
    def lookup(cls, name: str, unit_dir: Path) -> ServiceUser | None:
        """The user with its groups from /etc/group and the SupplementaryGroups= of unit_dir's
        drop-ins; None when there is no such user."""
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return None
        gids = {pw.pw_gid: "primary group"}
        for g in grp.getgrall():
            if name in g.gr_mem:
                gids.setdefault(g.gr_gid, "/etc/group")
        for conf, value in drop_in_settings(unit_dir, "SupplementaryGroups"):
            for group in value.split():
                try:
                    gids.setdefault(grp.getgrnam(group).gr_gid, str(conf))
                except KeyError:
                    continue  # no such group: it grants nothing
        return cls(name, pw.pw_uid, gids)

    def can_open(self, st: os.stat_result) -> bool:
        """Whether the permission bits let this user read and write the file."""
        if self.uid == 0:
            return True
        need = stat.S_IRUSR | stat.S_IWUSR
        if st.st_uid == self.uid:
            return st.st_mode & need == need
        if st.st_gid in self.gids:
            return st.st_mode & (need >> 3) == need >> 3
        return st.st_mode & (need >> 6) == need >> 6
