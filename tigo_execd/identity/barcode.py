"""Tigo node addresses and the barcodes printed on the optimizer labels.

People find an optimizer by the barcode on its label ("4-A2346FZ"); the bus and InfluxDB know its
8-byte address (04:C0:5B:40:00:A2:34:6F, tag form 04c05b4000a2346f). A barcode is the fourth
address byte's high nibble, '-', the remaining nine nibbles without leading zeros, and a check
letter: a 4-bit CRC (polynomial x^4 + x + 1, initial value 2, bits MSB first, no final xor) over
all 8 address bytes, written with the alphabet GHJKLMNPRSTVWXYZ. Only addresses with the Tigo prefix
04:C0:5B have a barcode. This matches what taptap prints (its src/barcode.rs), re-derived here.

`tigo-execd barcode VALUE` converts either way; a wrong check letter or malformed value exits
exitcodes.DATAERR.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, TypeGuard

from tigo_execd import exitcodes

if TYPE_CHECKING:
    from tigo_execd.cli import Subparsers

TIGO_PREFIX = b"\x04\xc0\x5b"
CHECK_LETTERS = "GHJKLMNPRSTVWXYZ"
_CRC_POLY = 0x3  # x^4 + x + 1 without the x^4 term
_CRC_INIT = 2

Address = bytes | bytearray | str | Iterable[int]

COLON_HEX = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){7}")
_PLAIN_HEX = re.compile(r"[0-9A-Fa-f]{16}")
# first nibble, '-', up to nine nibbles (36 bits), check letter; case and leading zeros are
# normalised by barcode_to_address, is_valid_barcode insists on the canonical form
_BARCODE = re.compile(r"([0-9A-F])-([0-9A-F]{0,9})([A-Z])")


def _crc_table() -> tuple[int, ...]:
    """Remainder of (byte * x^4) mod the polynomial for each byte value: one lookup per byte."""
    table = []
    for byte in range(256):
        reg = byte
        for _ in range(8):
            reg = ((reg << 1) ^ (_CRC_POLY << 4 if reg & 0x80 else 0)) & 0xFF
        table.append(reg >> 4)
    return tuple(table)


_TABLE = _crc_table()


def check_letter(addr: bytes) -> str:
    """The barcode's check letter for an 8-byte address."""
    crc = _CRC_INIT
    for byte in addr:
        crc = _TABLE[byte ^ (crc << 4)]
    return CHECK_LETTERS[crc]


def parse_address(addr: Address) -> bytes:
    """8 address bytes from colon hex, 16 plain hex digits, bytes, or a sequence of 8 ints."""
    if isinstance(addr, (bytes, bytearray)):
        raw = bytes(addr)
    elif isinstance(addr, str):
        text = addr.strip()
        if COLON_HEX.fullmatch(text):
            raw = bytes.fromhex(text.replace(":", ""))
        elif _PLAIN_HEX.fullmatch(text):
            raw = bytes.fromhex(text)
        else:
            raise ValueError(f"not a node address: {addr!r} (want 8 bytes as "
                             "04:C0:5B:40:00:A2:34:6F or 04c05b4000a2346f)")
    else:
        items = list(addr)
        if not all(type(b) is int and 0 <= b <= 255 for b in items):
            raise ValueError(f"not a node address: {items!r} (want 8 integers 0-255)")
        raw = bytes(items)
    if len(raw) != 8:
        raise ValueError(f"not a node address: {len(raw)} bytes, want 8")
    return raw


def address_hex(addr: Address) -> str:
    """16 lower-case hex digits: the form of the gateway_addr/node_addr tags. Raises ValueError
    (for people's input; registry.address_hex_from_json is the one for the bus's)."""
    return parse_address(addr).hex()


def address_colon(addr: Address) -> str:
    """Upper-case colon hex, as the taptap fork writes addresses."""
    return parse_address(addr).hex(":").upper()


def address_to_barcode(addr: Address) -> str | None:
    """The label barcode of a node address, None outside the Tigo prefix 04:C0:5B."""
    raw = parse_address(addr)
    if not raw.startswith(TIGO_PREFIX):
        return None
    digits = raw[3:].hex().upper()  # ten nibbles: the first leads, the other nine follow '-'
    return f"{digits[0]}-{digits[1:].lstrip('0')}{check_letter(raw)}"


def barcode_to_address(code: str) -> bytes:
    """The 8-byte address of a barcode; ValueError names what is wrong (format or check letter)."""
    if not isinstance(code, str):
        raise ValueError(f"not a barcode: {code!r}")
    text = code.strip().upper()
    m = _BARCODE.fullmatch(text)
    if not m:
        raise ValueError(f"not a barcode: {code!r} (want a hex digit, '-', up to 9 hex digits "
                         f"and a check letter, e.g. 4-A2346FZ)")
    first, rest, letter = m.groups()
    if letter not in CHECK_LETTERS:
        raise ValueError(f"not a barcode: {code!r} (check letter {letter!r} is not one of "
                         f"{CHECK_LETTERS})")
    raw = TIGO_PREFIX + bytes.fromhex(first + rest.rjust(9, "0"))
    expected = check_letter(raw)
    if letter != expected:
        raise ValueError(f"wrong check letter in barcode {code!r}: {letter!r}, expected "
                         f"{expected!r} for {first}-{rest}: a digit may be misread")
    return raw


def is_valid_barcode(s: object) -> TypeGuard[str]:
    """True only for a barcode exactly as taptap writes it (canonical form, right check letter).

    Barcodes arrive from the bus, which is hostile input; only these may become a tag value.
    """
    return isinstance(s, str) and len(s) <= 12 and _is_canonical(s)


@lru_cache(maxsize=4096)  # the same few barcodes repeat on every upstream report
def _is_canonical(s: str) -> bool:
    try:
        return address_to_barcode(barcode_to_address(s)) == s
    except ValueError:
        return False


def register(subparsers: Subparsers) -> None:
    from tigo_execd.cli import add_log_level

    p = subparsers.add_parser(
        "barcode", help="convert a node address to its label barcode or back",
        description="Print the barcode of a node ADDRESS (04:C0:5B:40:00:A2:34:6F, "
                    "04c05b4000a2346f) or the address of a BARCODE (4-A2346FZ). Exit "
                    f"{exitcodes.DATAERR} for a wrong check letter, a malformed value or an "
                    "address without a barcode.")
    p.add_argument("value", metavar="VALUE", help="a node address or a barcode")
    p.add_argument("--hex", action="store_true",
                   help="print an address as 16 lower-case hex digits (the node_addr tag form) "
                        "instead of upper-case colon hex")
    add_log_level(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    value = args.value.strip()
    try:
        if "-" in value:
            raw = barcode_to_address(value)
            print(raw.hex() if args.hex else address_colon(raw))
            return exitcodes.OK
        code = address_to_barcode(value)
    except ValueError as exc:
        raise exitcodes.Failure(str(exc), exitcodes.DATAERR) from None
    if code is None:
        raise exitcodes.Failure(f"{value} has no barcode: only addresses starting 04:C0:5B (Tigo) "
                                f"have one", exitcodes.DATAERR)
    print(code)
    return exitcodes.OK
