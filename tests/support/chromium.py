"""A real browser for pictures: Debian's `chromium`, headless, screenshots of a file.

The flags keep it off the network (no background requests, component updates, sync or QUIC) and
in a fresh profile; as root it needs --no-sandbox (it refuses to start otherwise). D-Bus errors on
its stderr are harmless in a container. See https://developer.chrome.com/docs/chromium/headless.
The PNG is read back with matplotlib (a test dependency already).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from matplotlib import image

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is missing: sudo apt-get install chromium (.ci/run installs it)"
    return found


def screenshot(page: Path, png: Path, width: int, height: int) -> None:
    """Render a local file (an SVG) at width x height CSS pixels, scale 1, into png."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.run([binary(), *FLAGS, f"--user-data-dir={profile}",
                               f"--window-size={width},{height}", "--force-device-scale-factor=1",
                               f"--screenshot={png}", page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and png.exists(), proc.stderr[-2000:]


class Png:
    """A screenshot read back: the colour at a pixel."""

    def __init__(self, path: Path) -> None:
        self.data = image.imread(path)  # PNG: floats 0..1, [y][x][rgba]
        self.height, self.width = self.data.shape[:2]

    def rgb(self, x: float, y: float) -> tuple[int, int, int]:
        px = self.data[int(y)][int(x)]
        return round(float(px[0]) * 255), round(float(px[1]) * 255), round(float(px[2]) * 255)
