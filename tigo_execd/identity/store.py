"""Node identities that outlive taptap and tigo-execd: the registry's state file and the names file.

taptap forgets barcodes at every restart and relearns them only when the CCA reads its node table
(maybe a day later), so what the registry learnt is kept in a JSON state file: loaded at start (the
first report after a restart is already tagged), saved atomically soon after every change. A
missing, unreadable or corrupt file is a warning, never a reason to stop ingesting.

The names file is a CSV a person edits; it gives nodes `panel` and `string` tags:

    # barcode, panel, string            or      gateway id, node id, panel, string
    4-A2346FZ,east-1,east                        4609,3,east-2,east

It is re-read when it changes (checked every NAMES_CHECK_S seconds) and on SIGHUP; malformed rows
are reported with their line numbers and skipped, the rest applies at once. Rows whose nodes are
unknown are only reported once the nodes had a chance to report (a full cycle after loading), as
at start nothing has reported yet.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import orjson

from tigo_execd import exitcodes
from tigo_execd.identity import layout
from tigo_execd.identity.barcode import address_to_barcode, barcode_to_address
from tigo_execd.identity.layout import LayoutError
from tigo_execd.identity.registry import MAX_ID, Registry, parse_id
from tigo_execd.log import log
from tigo_execd.systemd import state_dir

SAVE_MIN_INTERVAL_S = 5.0  # an infrastructure report changes many nodes at once: one write for all
NAMES_CHECK_S = 2.0
MAX_NAME = 64
SEPARATORS = {";": "';'", "\t": "tabs"}  # what spreadsheets write instead of commas
Names = dict[str | tuple[int, int], dict[str, str]]


def default_state_file() -> Path:
    return state_dir() / "registry.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-file", type=Path, default=None, metavar="FILE",
                   help="where learnt node addresses and barcodes are kept across restarts "
                        f"(default: {default_state_file()}; '' = keep nothing)")
    p.add_argument("--names", type=Path, default=None, metavar="FILE",
                   help="CSV naming nodes: 'barcode,panel,string' or 'gateway,node,panel,string' "
                        "rows; adds the panel and string tags")
    layout.add_arguments(p)


def state_path(arg: Path | None) -> Path | None:
    """--state-file as given, the default when absent, None for '' (persistence off)."""
    if arg is None:
        return default_state_file()
    return None if str(arg) in ("", ".") else arg


def load_state(registry: Registry, path: Path, whose: str = "") -> None:
    """Fill the registry from the state file; any problem is a W! line and an empty start.
    `whose` follows the path in the I! line (which registry a command reads)."""
    try:
        doc = orjson.loads(path.read_bytes())
        bad = registry.load_json(doc)
    except FileNotFoundError:
        log.debug(f"no node registry at {path} yet: starting empty")
        return
    except (OSError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        log.warn(f"node registry {path} is unusable ({exc}): starting empty; it is rewritten "
                 "when the next identity is learnt")
        return
    if bad:
        log.warn(f"node registry {path}: skipped {bad} malformed entries")
    log.info(f"node registry {path}{whose}: {len(registry.nodes)} nodes, "
             f"{sum(1 for n in registry.nodes.values() if 'barcode' in n)} with a barcode")


def save_state(registry: Registry, path: Path) -> bool:
    """Write the state file atomically (temporary file, fsync, rename): a crash leaves the old one."""
    data = orjson.dumps(registry.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
    try:
        # at most 0755 even under umask 0: in a world-writable directory anyone could swap the file
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o644)  # mkstemp makes it 0600; `nodes` of other users reads it
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.warn(f"cannot save the node registry to {path}: {exc}", key="state-save")
        return False
    return True


def _clean_name(text: str) -> str | None:
    """A panel/string name as a tag value: printable, at most MAX_NAME characters, else None."""
    return text if len(text) <= MAX_NAME and text.isprintable() else None


def read_names(path: Path) -> str:
    """The text of a names file; exitcodes.Failure NOINPUT when it cannot be opened, DATAERR with
    the line when it is not UTF-8 (a spreadsheet's "CSV" is often Windows-1252)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise exitcodes.Failure(f"cannot open names file {path}: {exc.strerror}",
                                exitcodes.NOINPUT) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise exitcodes.Failure(f"names file {path} line {line} is not UTF-8 text (byte "
                                f"0x{raw[exc.start]:02x}): save it as UTF-8 (a spreadsheet's "
                                f"\"CSV UTF-8\")", exitcodes.DATAERR) from None


def parse_names(text: str, source: str) -> tuple[Names, list[int], list[str]]:
    """(names by barcode or (gw, node), line number of each row, problems with line numbers)."""
    names: Names = {}
    where: dict[str | tuple[int, int], int] = {}
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text, newline=""))  # a quoted newline stays in its value
    first = True
    separated: dict[str, list[int]] = {}  # rows separated by something else than commas
    for cells in reader:
        n = reader.line_num
        cells = [c.strip() for c in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        other = [sep for sep in SEPARATORS if len(cells) == 1 and sep in cells[0]]
        if other:
            separated.setdefault(other[0], []).append(n)
            continue
        if first and cells[0].lower() in ("barcode", "gateway", "gateway_id"):
            first = False
            continue  # a header row
        first = False
        key: str | tuple[int, int]
        if "-" in cells[0]:
            if len(cells) not in (2, 3):
                problems.append(f"{source} line {n}: want barcode,panel[,string], got "
                                f"{len(cells)} fields")
                continue
            try:
                key = address_to_barcode(barcode_to_address(cells[0])) or ""
            except ValueError as exc:
                problems.append(f"{source} line {n}: {exc}")
                continue
            rest = cells[1:]
        elif cells[0].isdecimal():
            gateway, node = parse_id(cells[0]), parse_id(cells[1]) if len(cells) > 1 else None
            if len(cells) not in (3, 4) or gateway is None or node is None:
                problems.append(f"{source} line {n}: want gateway,node,panel[,string] with ids "
                                f"0-{MAX_ID}, got {','.join(cells)[:80]!r}")
                continue
            key = (gateway, node)
            rest = cells[2:]
        else:
            problems.append(f"{source} line {n}: {cells[0][:40]!r} is neither a barcode nor a "
                            "gateway id")
            continue
        tags = dict(zip(("panel", "string"), rest))
        if any(_clean_name(v) is None for v in tags.values()):
            problems.append(f"{source} line {n}: names must be printable and at most "
                            f"{MAX_NAME} characters")
            continue
        tags = {k: v for k, v in tags.items() if v}
        if not tags:
            problems.append(f"{source} line {n}: neither a panel nor a string name")
        elif key in names:
            problems.append(f"{source} line {n}: {key} is already named on line {where[key]}; "
                            "this row is ignored")
        else:
            names[key], where[key] = tags, n
    for sep, lines in separated.items():
        problems.append(f"{source} line{'s' * (len(lines) > 1)} {_line_list(lines)}: fields "
                        f"separated by {SEPARATORS[sep]}; "
                        "the names file is comma-separated (save it as CSV with commas), e.g. "
                        "4-A2346FZ,east-1,east")
    return names, list(where.values()), problems


def load_names(path: Path) -> Names:
    """The names file of a command that reads it once: its rows, each malformed one a W! line
    (and skipped); exitcodes.Failure when it cannot be read (read_names)."""
    names, _, problems = parse_names(read_names(path), str(path))
    for problem in problems:
        log.warn(problem + " (row skipped)")
    return names


def _line_list(lines: list[int]) -> str:
    return ", ".join(str(n) for n in lines[:20]) + (", ..." if len(lines) > 20 else "")


class ReportCounts(Protocol):
    """What the names file's check needs of the converter's counters (ingest's, read here only)."""

    reports: int
    nodes: set[tuple[int, int]]


class Followed:
    """A file a person edits while tigo-execd runs (the names file, the layout file): its text
    when it changed. A missing or unreadable file is one W! line, and what was loaded stays."""

    def __init__(self, path: Path, what: str, read: Callable[[Path], str]) -> None:
        self.path, self.what, self._read = path, what, read
        self._stat: tuple[int, int, int] | None = None
        self._text: str | None = None

    def changed(self, force: bool = False) -> str | None:
        """The new text, None when unchanged (touched or re-signalled only) or unreadable."""
        try:
            st = os.stat(self.path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature == self._stat and not force:
                return None
            self._stat = signature
            text = self._read(self.path)
        except (OSError, UnicodeDecodeError, LayoutError, exitcodes.Failure) as exc:
            if self._stat != (0, 0, 0):
                log.warn(f"cannot read {self.what} {self.path} ({exc}); keeping the {self.what} "
                         "loaded before, if any")
                self._stat = (0, 0, 0)
            return None
        if text == self._text:
            return None
        self._text = text
        return text


class Identity:
    """Keeps a registry's state file current, its names in step with the names file, and checks
    the layout file (identity/layout.py) against what is known whenever it changes."""

    def __init__(self, registry: Registry, state_file: Path | None, names_file: Path | None,
                 layout_file: Path | None = None) -> None:
        self.registry = registry
        self.state_file = state_file
        self.names_file = names_file
        self._dirty = asyncio.Event()
        self._names = Followed(names_file, "names file", read_names) \
            if names_file else None
        self._layout = Followed(layout_file, "layout file", layout.read_text) if layout_file else None
        self.counters: ReportCounts | None = None  # the converter's: which nodes have reported
        self._unjudged: list[tuple[str | tuple[int, int], int]] = []  # rows, lines: known yet?
        self._reports_at_load = 0
        self._drawing: layout.Drawing | None = None  # a layout not yet judged against the reports
        self._reports_at_drawing = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Identity:
        """Load the state file and the names file now, before the first report is converted."""
        identity = cls(Registry(), state_path(args.state_file), args.names, args.layout)
        if identity.state_file:
            load_state(identity.registry, identity.state_file)
        identity.reload(force=True)
        return identity

    def reload(self, force: bool = False) -> None:
        """Re-read the names file and the layout file, each when it changed."""
        if self._names:
            self.reload_names(force)
        if self._layout:
            self.reload_layout(force)

    def reload_names(self, force: bool = False) -> None:
        """Apply the names file when it changed; a missing or unreadable file keeps the old names."""
        assert self._names
        text = self._names.changed(force)
        if text is None:
            return
        names, lines, problems = parse_names(text, str(self.names_file))
        for problem in problems:
            log.warn(problem + " (row skipped)")
        self.registry.set_names(names)
        log.info(f"names file {self.names_file}: {len(names)} nodes named")
        self._unjudged = list(zip(names, lines))
        self._reports_at_load = self._reports()
        self._judge_names()

    def reload_layout(self, force: bool = False) -> None:
        """Check the layout file when it changed: its drawing now, its tokens once every node had
        the time to report (_judge_layout). Its mistakes are W! lines: ingest goes on."""
        assert self._layout
        text = self._layout.changed(force)
        if text is None:
            return
        drawing, problems = layout.parse(text, str(self._layout.path))
        for problem in problems:
            log.warn(problem)
        log.info(f"layout file {self._layout.path}: {len(drawing.faces)} faces, "
                 f"{sum(f.panels for f in drawing.faces)} panels drawn")
        self._drawing, self._reports_at_drawing = drawing, self._reports()
        self._judge_layout()

    def _reports(self) -> int:
        return self.counters.reports if self.counters else 0

    def _cycle_since(self, reports: int) -> bool:
        """Every node had the time to report since then: more reports than nodes arrived."""
        c = self.counters
        return c is not None and c.reports - reports > len(c.nodes)

    def _judge_layout(self) -> None:
        if self._drawing is None or self.counters is None or not self._cycle_since(self._reports_at_drawing):
            return
        known = layout.Known.build(self.registry.names, self.registry,
                                   (layout.Reported(key) for key in self.counters.nodes))
        drawn, problems = layout.resolve(self._drawing, known)
        self._drawing = None
        for problem in problems:
            log.warn(problem)
        note = drawn.undrawn_note(known)
        if note:
            log.info(note)

    def _judge_names(self) -> None:
        """Once every node had the time to report since the names were loaded, say which rows
        still name no known node."""
        c = self.counters
        if not self._unjudged or c is None or not self._cycle_since(self._reports_at_load):
            return
        unknown = [n for key, n in self._unjudged if not self._known(key, c.nodes)]
        self._unjudged = []
        if unknown:
            log.info(f"{self.names_file}: {len(unknown)} rows name nodes that have not reported "
                     f"while the others did (lines {_line_list(unknown)}); a gateway,node row "
                     "applies once that node reports, a barcode row once taptap has learnt the "
                     "barcode (the CCA sends it when it reads its node table): check these rows")

    def _known(self, key: str | tuple[int, int], seen: set[tuple[int, int]]) -> bool:
        if isinstance(key, tuple):
            return key in seen or key in self.registry.nodes
        return any(n.get("barcode") == key for n in self.registry.nodes.values())

    async def run(self) -> None:
        """Background work while ingesting: save after changes, follow the names file."""
        tasks = []
        if self.state_file:
            self.registry.on_change = self._dirty.set
            tasks.append(self._save_loop())
        if self._names or self._layout:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload, True)
            tasks.append(self._follow_loop())
        await asyncio.gather(*tasks)

    async def _save_loop(self) -> None:
        assert self.state_file is not None
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            save_state(self.registry, self.state_file)
            await asyncio.sleep(SAVE_MIN_INTERVAL_S)

    async def _follow_loop(self) -> None:
        while True:
            await asyncio.sleep(NAMES_CHECK_S)
            self.reload()
            self._judge_names()
            self._judge_layout()

    def close(self) -> None:
        """At shutdown: save what was learnt since the last save."""
        if self.state_file and self._dirty.is_set():
            save_state(self.registry, self.state_file)
