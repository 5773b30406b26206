"""A small InfluxDB 1.x HTTP client (stdlib only) for the commands that read back what was written.

Credentials go in a Basic auth header, never in the URL, so they do not show up in logs. A URL
that carries them anyway (`http://user:pass@host`) has them moved to the header at once, so no
message ever quotes them.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from tigo_execd import argtypes, exitcodes, measurements
from tigo_execd.log import log

T = TypeVar("T")
RETRY_S = (1.0, 2.0, 4.0, 8.0)  # the first waits for an InfluxDB that is away, then every PROGRESS_S
PROGRESS_S = 10.0               # a retrying command says so at least this often


class InfluxError(exitcodes.Failure):
    """A query or write failed for a reason InfluxDB stated (HTTP 4xx, or an error in a 200 answer);
    `hint` is what to do, said after the message."""

    code = exitcodes.SOFTWARE
    hint = "check --influx-url, --db, --rp and --measurement"

    def __str__(self) -> str:
        return f"{self.args[0]}: {self.hint}" if self.hint else str(self.args[0])

    @property
    def reason(self) -> str:
        """The message without the hint (for lines that give their own advice)."""
        return str(self.args[0])


class InfluxUnreachable(InfluxError):
    """An outage: no HTTP answer (InfluxDB down, connection refused or reset, a timeout) or an HTTP
    5xx (InfluxDB shutting down or starting: "engine is closed", "query engine shutdown")."""

    code = exitcodes.UNAVAILABLE
    hint = "check that InfluxDB runs (systemctl status influxdb) and that --influx-url points at it"


class InfluxAuthFailed(InfluxError):
    """HTTP 401/403: missing or wrong INFLUX_USER / INFLUX_PASS."""

    code = exitcodes.NOPERM
    hint = ("set INFLUX_USER and INFLUX_PASS (e.g. in /etc/default/telegraf) to a user that may "
            "read and write the database")


class InfluxNoDatabase(InfluxError):
    """The database (--db) does not exist; the message names those that do."""

    hint = "start the Telegraf data instance (it creates the database) or fix --db"


class InfluxBadUrl(InfluxError):
    """Settings that cannot reach any InfluxDB as written: found before anything is sent."""

    code = exitcodes.USAGE
    hint = ""


def check_url(url: str) -> None:
    """Raise InfluxBadUrl for a URL without http:// or https:// (which urllib would only call an
    "unknown url type", and Telegraf's outputs.influxdb refuses too) or with a port out of range."""
    parts = urllib.parse.urlsplit(url)
    shown = url.rsplit("@", 1)[-1]  # never quote credentials
    if "://" not in url:
        raise InfluxBadUrl(f"InfluxDB URL {shown!r} (INFLUX_URL, --influx-url) has no scheme: write "
                           f"http://{shown} (Telegraf's outputs.influxdb needs the scheme too)")
    if parts.scheme.lower() not in ("http", "https"):
        raise InfluxBadUrl(f"InfluxDB URL {shown!r} (INFLUX_URL, --influx-url) starts with "
                           f"{parts.scheme}://: InfluxDB answers on http:// or https://, e.g. "
                           f"http://127.0.0.1:8086")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or not parts.hostname:
        raise InfluxBadUrl(f"InfluxDB URL {shown!r} (--influx-url) needs a host and a port from 1 "
                           f"to 65535: write e.g. http://127.0.0.1:8086")


def check_db(name: str) -> None:
    """Raise InfluxBadUrl for a database name InfluxQL cannot quote (empty, or with a control
    character: its quoted identifiers end at a line break)."""
    if not name or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise InfluxBadUrl(f"database name {name!r} (--db) cannot be written in InfluxQL: use "
                           f"letters, digits and _ (the default is bms)")


@dataclass
class Influx:
    url: str = "http://127.0.0.1:8086"
    db: str = "bms"
    user: str | None = None
    password: str | None = None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if "@" in parts.netloc:
            userinfo, host = parts.netloc.rsplit("@", 1)
            user, _, password = userinfo.partition(":")
            self.user = self.user or urllib.parse.unquote(user) or None
            self.password = self.password or urllib.parse.unquote(password) or None
            self.url = urllib.parse.urlunsplit(parts._replace(netloc=host))

    def _request(self, path: str, params: dict[str, str], body: bytes | None = None) -> bytes:
        url = f"{self.url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        if self.user:
            token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                answer: bytes = resp.read()
                return answer
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()
            if exc.code in (401, 403):
                raise InfluxAuthFailed(f"InfluxDB at {self.url} refused the credentials "
                                       f"(HTTP {exc.code}): {detail}") from None
            if exc.code == 404 and "database not found" in detail and "db" in params:
                raise self._no_database() from None
            if exc.code >= 500:  # the server's own trouble, not the query's: a restart, most often
                raise InfluxUnreachable(f"InfluxDB at {self.url} is unavailable (HTTP {exc.code}): "
                                        f"{detail}") from None
            raise InfluxError(f"InfluxDB at {self.url} rejected the request (HTTP {exc.code}): "
                              f"{detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InfluxUnreachable(f"InfluxDB at {self.url} is unreachable: {reason}") from None
        except http.client.HTTPException as exc:  # something answered, but not in HTTP
            raise InfluxUnreachable(f"{self.url} does not answer like an HTTP server (another "
                                    f"service on that port?): {exc!r}") from None

    def query(self, q: str, epoch: str = "ns") -> list[dict[str, Any]]:
        """Run one InfluxQL statement and return its series (empty list when nothing matched)."""
        body = urllib.parse.urlencode({"q": q}).encode()
        raw = self._request("/query", {"db": self.db, "epoch": epoch}, body)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InfluxUnreachable(f"{self.url} does not answer like InfluxDB (not JSON: "
                                    f"{raw[:60]!r})") from None
        result = (doc.get("results") or [{}])[0]
        error = doc.get("error") or result.get("error")
        if error and error.startswith("database not found"):
            raise self._no_database()
        if error:
            raise InfluxError(f"InfluxDB at {self.url} rejected a query on '{self.db}': {error}")
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    def _no_database(self) -> InfluxNoDatabase:
        """The missing database named with those that exist (the closest first, for a typo)."""
        try:
            raw = self._request("/query", {}, urllib.parse.urlencode({"q": "SHOW DATABASES"}).encode())
            series = (orjson.loads(raw).get("results") or [{}])[0].get("series", [])
            names = [row[0] for s in series for row in s.get("values", []) if row[0] != "_internal"]
        except (InfluxError, orjson.JSONDecodeError, AttributeError):
            names = []
        close = difflib.get_close_matches(self.db, names, 1)
        have = f"it has {', '.join(names)}" if names else "it has no database yet"
        guess = f"; did you mean {close[0]}?" if close else ""
        return InfluxNoDatabase(f"database '{self.db}' does not exist on {self.url} ({have}){guess}")

    def write(self, lines: bytes, rp: str | None = None) -> None:
        params = {"db": self.db, "precision": "ns"}
        if rp:
            params["rp"] = rp
        self._request("/write", params, lines)

    def ping(self) -> None:
        self._request("/ping", {})


def retrying(action: str, fn: Callable[[], T], budget_s: float) -> T:
    """Run fn(), again while InfluxDB is away (a restart, a network blip) for up to budget_s in all,
    saying so at least every PROGRESS_S so that the wait never looks hung; InfluxUnreachable when it
    stays away longer. Any other failure ends it at once."""
    deadline = time.monotonic() + budget_s
    attempt = 0
    while True:
        try:
            return fn()
        except InfluxUnreachable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            pause = min(RETRY_S[attempt] if attempt < len(RETRY_S) else PROGRESS_S, left)
            say = log.warn if attempt == 0 else log.info
            say(f"{action}: {exc}; retrying for {left:.0f} s more (next try in {pause:.0f} s)")
            time.sleep(pause)
            attempt += 1


def rows(series: list[dict[str, Any]]) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """(tags, column -> value) for every row of every series of a query answer, in its order."""
    for s in series:
        columns = s["columns"]
        for values in s.get("values", []):
            yield s.get("tags", {}), dict(zip(columns, values))


def ident(name: str) -> str:
    """An InfluxQL double-quoted identifier (a measurement or tag name from the command line)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def target(rp: str, measurement: str) -> str:
    """FROM clause target; an empty retention policy means the database's default."""
    return f"{ident(rp)}.{ident(measurement)}" if rp else ident(measurement)


def add_arguments(p: argparse.ArgumentParser, timeout: float = 10.0, measurement: bool = True) -> None:
    """The options every command that reads InfluxDB shares (credentials: environment only);
    `heal` has no --measurement (each journal line names its own)."""
    p.add_argument("--influx-url", default="http://127.0.0.1:8086",
                   help="InfluxDB 1.x base URL (default: http://127.0.0.1:8086)")
    p.add_argument("--db", default="bms", help="database (default: bms)")
    p.add_argument("--rp", default="", help="retention policy (default: the database's default)")
    if measurement:
        p.add_argument("--measurement", default=measurements.POWER_REPORT,
                       help=f"measurement of the power reports (default: {measurements.POWER_REPORT})")
    p.add_argument("--timeout", type=argtypes.number(0, above=True, unit="seconds"), default=timeout,
                   metavar="S",
                   help=f"HTTP timeout per InfluxDB query in seconds (default: {timeout:g})")


def from_args(args: argparse.Namespace) -> Influx:
    """A client for the options of add_arguments, with INFLUX_USER / INFLUX_PASS from the
    environment (never from the command line, where every user could read them). A URL or database
    name that cannot work raises InfluxBadUrl here, before any connection or retry."""
    check_url(args.influx_url)
    check_db(args.db)
    if "@" in urllib.parse.urlsplit(args.influx_url).netloc:
        log.warn("--influx-url carries credentials, which every user can read in the process "
                 "list: set INFLUX_USER and INFLUX_PASS instead (e.g. in /etc/default/telegraf)")
    return Influx(args.influx_url, args.db, os.environ.get("INFLUX_USER") or None,
                  os.environ.get("INFLUX_PASS") or None, timeout=args.timeout)
