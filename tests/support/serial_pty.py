"""A pseudo-terminal standing in for a USB RS-485 adapter, and what it takes to deny access to one
(an owner and group the test user is not, a root without its override of file permissions)."""

from __future__ import annotations

import grp
import os
import pwd
import tty

# Root ignores file permissions; without CAP_DAC_OVERRIDE it is held to them like anyone else.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
NOBODY, DIALOUT = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("dialout").gr_gid


class Pty:
    """A pseudo-terminal standing in for a USB RS-485 adapter: the test writes the bus to `master`."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing, until the bridge sets its own mode
        self.path = os.ttyname(slave)
        os.close(slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        os.close(self.master)
