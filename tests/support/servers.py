"""Real servers for the tests: InfluxDB 1.x (`influxd`) and Mosquitto, on free loopback ports.

Each server runs from a temporary directory with its own config and data, is waited for by polling
its port (support.wait, never a blind sleep), and is stopped and reaped on exit. A missing
binary fails with the command that installs it: integration tests are never skipped.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from support.wait import wait_until

INSTALL_HINT = "install it with: apt-get install -y influxdb mosquitto (or run .ci/run)"
_db_names = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str, extra: tuple[str, ...] = ()) -> str:
    path = shutil.which(name) or next((p for p in extra if os.path.exists(p)), None)
    if not path:
        raise RuntimeError(f"{name} not found; {INSTALL_HINT}")
    return path


class Server:
    """A child server process with a temporary directory; stop() kills, reaps and cleans up."""

    name = "server"
    proc: subprocess.Popen

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"tigo-{self.name}-"))
        self.port = free_port()

    def _spawn(self, argv: list[str]) -> None:
        with open(self.dir / "server.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    def _wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        """Wait until `ready()`; a server that exits meanwhile fails at once, with its log."""
        def check() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   f"{(self.dir / 'server.log').read_text(errors='replace')[-2000:]}")
            return ready()

        try:
            wait_until(check, timeout, f"{self.name} to accept connections on port {self.port}")
        except BaseException:
            self.stop()  # no server left running behind a failed start
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class InfluxServer(Server):
    """influxd 1.x; with auth=True an admin user `admin`/`adminpw` is created; cq_interval (e.g. "1s")
    turns continuous queries on, checked that often."""

    name = "influxd"

    def __init__(self, auth: bool = False, cq_interval: str | None = None) -> None:
        super().__init__()
        self.auth = auth
        rpc = free_port()
        conf = self.dir / "influxdb.conf"
        conf.write_text(f"""
reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{self.dir}/meta"
[data]
  dir = "{self.dir}/data"
  wal-dir = "{self.dir}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "10s"
[coordinator]
  query-timeout = "30s"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {str(auth).lower()}
  log-enabled = false
[continuous_queries]
  enabled = {str(cq_interval is not None).lower()}
  run-interval = "{cq_interval or '1s'}"
""")
        self.argv = [_binary("influxd", ("/usr/bin/influxd",)), "-config", str(conf)]
        self._spawn(self.argv)
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready(self._ping, 30)
        if auth:
            self.raw_query("CREATE USER admin WITH PASSWORD 'adminpw' WITH ALL PRIVILEGES")

    def pause(self) -> None:
        """An outage: influxd stops, its data stays for resume()."""
        self.proc.terminate()
        self.proc.wait(30)

    def resume(self) -> None:
        """influxd again, on the same port with the same data."""
        self._spawn(self.argv)
        self._wait_ready(self._ping, 30)

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=1) as r:
                return r.status == 204
        except OSError:
            return False

    def raw_query(self, q: str, db: str | None = None) -> bytes:
        import urllib.parse
        params = {"q": q}
        if db:
            params["db"] = db
        auth = "?" + urllib.parse.urlencode({"u": "admin", "p": "adminpw"}) if self.auth else ""
        req = urllib.request.Request(self.url + "/query" + auth,
                                     data=urllib.parse.urlencode(params).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()

    @contextmanager
    def database(self, prefix: str = "t") -> Iterator:
        """A database no other test uses (the name holds this process's id and a counter), empty,
        and dropped afterwards: tests that share a server share nothing else. Yields its client."""
        name = f"{prefix}{os.getpid()}_{next(_db_names)}"
        self.raw_query(f'CREATE DATABASE "{name}"')
        try:
            yield self.client(name)
        finally:
            self.raw_query(f'DROP DATABASE "{name}"')

    def client(self, db: str):
        from tigo_execd.influx import Influx
        if self.auth:
            return Influx(self.url, db, "admin", "adminpw", timeout=30)
        return Influx(self.url, db, timeout=30)


class MosquittoServer(Server):
    """Mosquitto 2.x, anonymous, no persistence, loopback only."""

    name = "mosquitto"

    def __init__(self) -> None:
        super().__init__()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self._spawn([_binary("mosquitto", ("/usr/sbin/mosquitto",)), "-c", str(conf)])
        self._wait_ready(self._listening, 15)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False
