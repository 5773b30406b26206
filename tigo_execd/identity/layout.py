"""The layout file: a plain-text drawing of the roof, one block per roof face, one line per row.

    # our house
    [east azimuth=115 tilt=30]
    E1 E2 E3 E4 E5 E6
    E7 E8 .  E9 E10 E11

    [west azimuth=245 tilt=30]
    4609/13 4609/14 4-A2346FZ W4

A token is a panel name from the names file, a barcode or `gateway/node`; `.` is an empty spot (a
chimney, a window); `#` starts a comment. Face headers `[name key=value ...]` are optional (rows
before the first header form the face `roof`), and so are `azimuth` (0-360) and `tilt` (0-90) in
degrees. The format is a contract (issue 22).

It lives beside the names file (identity) because it names panels the same way and every command
that reads the names file reads it too. read() checks the drawing alone (before anything is
asked of InfluxDB); Drawing.resolve() finds each spot's optimizer among the panels Known from the
names file, the node registry and the reports, so a token that names none, or a panel drawn
twice, is a mistake. Every mistake is a line-numbered message; a file with any is refused as a
whole (LayoutError), as a roof drawn half right misleads.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tigo_execd import exitcodes
from tigo_execd.identity.barcode import address_to_barcode, barcode_to_address
from tigo_execd.identity.registry import MAX_NODES, Registry, id_sort_key, parse_id
from tigo_execd.log import log

if TYPE_CHECKING:
    from tigo_execd.identity.store import Names

MAX_BYTES = 1 << 20   # a drawing of MAX_NODES panels is under 100 KB: anything bigger is not one
MAX_TOKEN = 64        # the names file's MAX_NAME
DEFAULT_FACE = "roof"
KEYS = {"azimuth": (0.0, 360.0), "tilt": (0.0, 90.0)}  # face header keys: degrees, inclusive range
EMPTY = "."
_IDS = re.compile(r"(\d+)/(\d+)")
_LOOKS_LIKE_BARCODE = re.compile(r"[0-9A-Fa-f]-[0-9A-Fa-f]{0,9}[A-Za-z]")

Key = tuple[int, int]  # (gateway id, node id)


class LayoutError(Exception):
    """The layout file cannot be used: every mistake, one line-numbered message each, and the
    exit code that says so (exitcodes.DATAERR, or NOINPUT when it cannot be opened)."""

    def __init__(self, problems: list[str], code: int = exitcodes.DATAERR) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.code = code

    def report(self) -> int:
        """Every mistake as an E! line; the exit code."""
        for problem in self.problems:
            log.error(problem)
        return self.code


class Reported(NamedTuple):
    """A panel seen in the reports (InfluxDB, or run's own): its ids and identity tags."""

    key: Key
    barcode: str | None = None
    panel: str | None = None


@dataclass
class Known:
    """Every panel a token may name: from the names file, the node registry and the reports.
    Made by build(), and not changed after."""

    names: Names = field(default_factory=dict)          # the names file's rows
    barcodes: dict[str, Key] = field(default_factory=dict)  # barcode -> ids (registry, reports)
    ids: set[Key] = field(default_factory=set)          # ids known from any source
    reporting: set[Key] = field(default_factory=set)    # ids with reports: listed when not drawn
    tag_names: dict[Key, str] = field(default_factory=dict)  # the panel tag of their reports
    by_key: dict[Key, str] = field(default_factory=dict)  # ids -> barcode (made by build())

    @classmethod
    def build(cls, names: Names | None = None, registry: Registry | None = None,
              reports: Iterable[Reported] = ()) -> Known:
        known = cls(names=dict(names or {}))
        for key, info in (registry.nodes.items() if registry else ()):
            known.ids.add(key)
            if info.get("barcode"):
                known.barcodes[info["barcode"]] = key
        for r in reports:
            known.ids.add(r.key)
            known.reporting.add(r.key)
            if r.barcode:
                known.barcodes[r.barcode] = r.key
            if r.panel:
                known.tag_names[r.key] = r.panel
        known.ids.update(k for k in known.names if isinstance(k, tuple))
        known.by_key = {k: b for b, k in known.barcodes.items()}
        return known

    def name_of(self, key: Key | None, barcode: str | None) -> str | None:
        """The panel's name: the names file's (by barcode, else ids), else its reports' tag."""
        row = self.names.get(barcode or "") or (self.names.get(key) if key else None)
        return (row or {}).get("panel") or (self.tag_names.get(key) if key else None)

    def barcode_of(self, key: Key) -> str | None:
        return self.by_key.get(key)

    def by_name(self) -> dict[str, list[tuple[Key | None, str | None]]]:
        """Panel name -> the (ids, barcode) it is given to: names file rows first, then tags."""
        out: dict[str, list[tuple[Key | None, str | None]]] = {}
        for k, row in self.names.items():
            if row.get("panel"):
                key = k if isinstance(k, tuple) else self.barcodes.get(k)
                barcode = k if isinstance(k, str) else self.barcode_of(k)
                out.setdefault(row["panel"], []).append((key, barcode))
        for key, name in self.tag_names.items():
            given = out.setdefault(name, [])
            if not any(k == key for k, _ in given) and self.name_of(key, self.barcode_of(key)) == name:
                given.append((key, self.barcode_of(key)))
        return out


@dataclass(frozen=True)
class Spot:
    """One drawn panel: where it sits in its face and which optimizer it is."""

    token: str             # as written in the file
    line: int              # line number in the file (1-based)
    row: int               # 0-based row of its face, top first
    col: int               # 0-based column, left first (an empty spot `.` takes a column too)
    key: Key | None = None  # (gateway, node); None: known by barcode or name only, not yet seen
    barcode: str | None = None
    name: str | None = None  # its panel name (names file, else the reports' panel tag)

    @property
    def panel_id(self) -> str:
        """`GATEWAY/NODE` (the SVG's data-panel), "" while its ids are unknown."""
        return f"{self.key[0]}/{self.key[1]}" if self.key else ""

    @property
    def label(self) -> str:
        """What is written on it: its name, else its barcode, else gateway/node."""
        return self.name or self.barcode or self.panel_id or self.token


@dataclass(frozen=True)
class Face:
    """One roof face: its rows top to bottom; a row holds a Spot or None (empty spot) per column."""

    name: str
    line: int                       # the header's line (the first row's when it has no header)
    azimuth: float | None = None    # degrees clockwise from north
    tilt: float | None = None       # degrees from horizontal
    rows: tuple[tuple[Spot | None, ...], ...] = ()

    @property
    def columns(self) -> int:
        return max((len(r) for r in self.rows), default=0)

    def spots(self) -> Iterator[Spot]:
        return (s for r in self.rows for s in r if s is not None)


@dataclass(frozen=True)
class Layout:
    """A checked drawing: its faces in file order, each spot resolved to an optimizer."""

    source: str
    faces: tuple[Face, ...]

    def spots(self) -> Iterator[tuple[Face, Spot]]:
        return ((f, s) for f in self.faces for s in f.spots())

    def ids(self) -> set[Key]:
        """The (gateway, node) of every drawn panel whose ids are known."""
        return {s.key for _, s in self.spots() if s.key}

    def peer_groups(self) -> dict[Key, str]:
        """(gateway, node) -> peer group name for the panels of every face that gives an azimuth:
        the user says these panels face alike, which beats a guess (`faults`)."""
        return {s.key: f"face {f.name}" for f, s in self.spots() if f.azimuth is not None and s.key}

    def undrawn(self, known: Known) -> list[Key]:
        """Panels that report but are not drawn, in id order."""
        drawn = self.ids()
        return sorted((k for k in known.reporting if k not in drawn),
                      key=lambda k: (id_sort_key(str(k[0])), id_sort_key(str(k[1]))))

    def undrawn_note(self, known: Known) -> str | None:
        """The one message listing them, None when every reporting panel is drawn."""
        missing = self.undrawn(known)
        if not missing:
            return None
        shown = ", ".join(f"{g}/{n}" for g, n in missing[:40]) + (", ..." if len(missing) > 40 else "")
        many = len(missing) > 1
        return (f"{self.source}: {len(missing)} {'panels report' if many else 'panel reports'} but "
                f"{'are' if many else 'is'} not drawn: {shown}")


# ------------------------------------------------------------------ reading and parsing

def add_arguments(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    """--layout, as every command that reads the names file takes it ('' = none, as a Telegraf
    conf passes an unset variable)."""
    p.add_argument("--layout", type=lambda text: Path(text) if text else None, metavar="FILE",
                   help="layout file: the roof drawn in text, a face per [name azimuth=... tilt=...] "
                        "block, a line per row of panels (docs/reference/layout.md; '' = none)")


def read_text(path: Path) -> str:
    """The file's text; LayoutError (NOINPUT) when it cannot be opened, (DATAERR) when it is too
    big, binary or not UTF-8: never more than MAX_BYTES + 1 bytes are read."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise LayoutError([f"cannot open layout file {path}: {exc.strerror or exc}"],
                          exitcodes.NOINPUT) from None
    if len(raw) > MAX_BYTES:
        raise LayoutError([f"{path}: over {MAX_BYTES // 1024} KiB, too big for a drawing of a roof "
                           f"(is it the right file?)"])
    if b"\0" in raw:
        line = raw[:raw.index(b"\0")].count(b"\n") + 1
        raise LayoutError([f"{path} line {line}: binary data (a NUL byte), not a text file (UTF-16? "
                           "save it as UTF-8)"])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise LayoutError([f"{path} line {line}: not UTF-8 text (byte {raw[exc.start]:#04x} at "
                           f"offset {exc.start}): save it as UTF-8"]) from None


@dataclass
class FaceDraft:
    """A face while it is read."""

    name: str
    line: int
    keys: dict[str, float] = field(default_factory=dict)
    rows: list[tuple[int, list[str]]] = field(default_factory=list)  # (line, tokens)

    @property
    def panels(self) -> int:
        return sum(t != EMPTY for _, tokens in self.rows for t in tokens)


@dataclass(frozen=True)
class Drawing:
    """The file as drawn, checked on its own, its tokens not yet resolved to optimizers."""

    source: str
    faces: list[FaceDraft]

    def resolve(self, known: Known) -> Layout:
        """The Layout; LayoutError with every token that names no known panel or a panel twice."""
        layout, problems = resolve(self, known)
        if problems:
            raise LayoutError(problems)
        return layout


def read(path: Path, source: str | None = None) -> Drawing:
    """Read and parse a layout file; LayoutError with every mistake of the drawing itself."""
    drawing, problems = parse(read_text(path), source or str(path))
    if problems:
        raise LayoutError(problems)
    return drawing


def parse(text: str, source: str) -> tuple[Drawing, list[str]]:
    """The faces as drawn and the mistakes of the drawing itself, in line order."""
    problems: list[str] = []
    faces: list[FaceDraft] = []
    where = f"{source} line"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            face = _header(line, f"{where} {n}", n, problems)
            if face:
                first = next((f for f in faces if f.name == face.name), None)
                if first:
                    problems.append(f"{where} {n}: face {face.name!r} is already drawn on line "
                                    f"{first.line}: give each face its own name")
                faces.append(face)
            continue
        if not faces:
            faces.append(FaceDraft(DEFAULT_FACE, n))
        tokens = line.split()
        for i, token in enumerate(tokens):
            if len(token) > MAX_TOKEN or not token.isprintable():
                shown = repr(token[:MAX_TOKEN]) + ("..." if len(token) > MAX_TOKEN else "")
                problems.append(f"{where} {n}: {shown} is not a panel: a token is a name of at most "
                                f"{MAX_TOKEN} printable characters")
                tokens[i] = EMPTY  # told once: not again as a panel nobody knows
        faces[-1].rows.append((n, tokens))
    for face in faces:
        if not face.panels:
            what = "rows" if not face.rows else "panels (only empty spots)"
            problems.append(f"{where} {face.line}: face {face.name!r} has no {what}: draw its "
                            "panels on the lines below the header, or remove the header")
    if not faces:
        problems.append(f"{source}: no panels: the file is empty or holds only comments "
                        "(one line per row of panels, e.g. `4609/2 4609/3 4609/4`)")
    elif sum(f.panels for f in faces) > MAX_NODES:
        problems.append(f"{source}: over {MAX_NODES} panels drawn, more than a CCA serves")
    return Drawing(source, faces), sorted(problems, key=_line_of)


def _header(line: str, where: str, n: int, problems: list[str]) -> FaceDraft | None:
    """A face from `[name key=value ...]`; its mistakes are added to problems."""
    if not line.endswith("]"):
        problems.append(f"{where}: a face header is `[name key=value ...]` on a line of its own, "
                        f"got {line[:60]!r}")
        return None
    words = line[1:-1].split()
    if not words or "=" in words[0]:
        problems.append(f"{where}: the face has no name: write `[name azimuth=... tilt=...]`")
        return None
    face = FaceDraft(words[0], n)
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if key not in KEYS:
            problems.append(f"{where}: bad key {word[:40]!r}: a face header knows "
                            f"{', '.join(f'{k}=DEGREES' for k in KEYS)}")
            continue
        low, high = KEYS[key]
        try:
            number = float(value) if eq else float("nan")
        except ValueError:
            number = float("nan")
        if not low <= number <= high:
            problems.append(f"{where}: bad key {word[:40]!r}: {key} is a number of degrees from "
                            f"{low:g} to {high:g}")
        elif key in face.keys:
            problems.append(f"{where}: {key} is given twice")
        else:
            face.keys[key] = number
    return face


def resolve(drawing: Drawing, known: Known) -> tuple[Layout, list[str]]:
    """Each token's optimizer; tokens that name no known panel and panels drawn twice are mistakes."""
    source = drawing.source
    problems: list[str] = []
    names = known.by_name()
    drawn: dict[object, tuple[int, str]] = {}  # identity -> (line, token) first drawn as
    faces = []
    for d in drawing.faces:
        rows = []
        for r, (n, tokens) in enumerate(d.rows):
            row: list[Spot | None] = []
            for c, token in enumerate(tokens):
                if token == EMPTY:
                    row.append(None)
                    continue
                spot = _spot(token, n, r, c, known, names, f"{source} line {n}", problems)
                row.append(spot)
                if spot is None:
                    continue
                identity = spot.key or spot.barcode or spot.token
                if identity in drawn:
                    line, first = drawn[identity]
                    same = "" if first == token else f" as {first!r}, the same panel"
                    problems.append(f"{source} line {n}: {token!r} is drawn twice: already on line "
                                    f"{line}{same}")
                else:
                    drawn[identity] = n, token
            rows.append(tuple(row))
        faces.append(Face(d.name, d.line, d.keys.get("azimuth"), d.keys.get("tilt"), tuple(rows)))
    return Layout(source, tuple(faces)), problems


def _spot(token: str, n: int, r: int, c: int, known: Known,
          names: dict[str, list[tuple[Key | None, str | None]]], where: str,
          problems: list[str]) -> Spot | None:
    """The Spot a token names: a panel name first, then gateway/node, then a barcode."""
    given = names.get(token)
    if given and len(given) > 1:
        problems.append(f"{where}: {token!r} is the name of {len(given)} panels "
                        f"({', '.join(b or f'{k[0]}/{k[1]}' if k else str(b) for k, b in given)}): "
                        "draw them by barcode or gateway/node")
        return None
    if given:
        key, barcode = given[0]
        return Spot(token, n, r, c, key, barcode, token)
    m = _IDS.fullmatch(token)
    if m:
        gw, node = parse_id(m[1]), parse_id(m[2])
        if gw is None or node is None:
            problems.append(f"{where}: {token!r}: gateway and node ids are 0-65535")
            return None
        key = (gw, node)
        if key not in known.ids:
            problems.append(f"{where}: {token!r} names no known panel: no gateway {gw} node {node} "
                            "in the names file, the node registry or the reports")
            return None
        barcode = known.barcode_of(key)
        return Spot(token, n, r, c, key, barcode, known.name_of(key, barcode))
    barcode, why = _barcode(token)
    if barcode and (barcode in known.barcodes or barcode in known.names):
        key_of = known.barcodes.get(barcode)
        return Spot(token, n, r, c, key_of, barcode, known.name_of(key_of, barcode))
    problems.append(f"{where}: {token!r} names no known panel (known: the names file's panel names "
                    f"and barcodes, the node registry, the reports; or write gateway/node)"
                    + (f"; {why}" if why else ""))
    return None


def _barcode(token: str) -> tuple[str | None, str | None]:
    """(canonical barcode, None) or (None, why it is not one when it looks like one)."""
    if not _LOOKS_LIKE_BARCODE.fullmatch(token):
        return None, None
    try:
        return address_to_barcode(barcode_to_address(token)), None
    except ValueError as exc:
        return None, str(exc)


def _line_of(problem: str) -> int:
    m = re.search(r" line (\d+):", problem)
    return int(m[1]) if m else 0
