"""Whether an MQTT broker accepts a connection: the MQTT 3.1.1 CONNECT/CONNACK handshake, stdlib only.

`doctor` needs no client library for this one exchange: it connects, reads the broker's verdict
and disconnects.
"""

from __future__ import annotations

import os
import socket

CONNACK = {1: "unacceptable protocol version", 2: "client id rejected", 3: "server unavailable",
           4: "bad user name or password", 5: "not authorized"}


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def mqtt_connect_packet(client_id: str, username: str = "", password: str = "",
                        keep_alive: int = 10) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session."""
    flags = 0x02 | (0x80 if username else 0) | (0x40 if username and password else 0)
    body = _mqtt_string("MQTT") + bytes([4, flags]) + keep_alive.to_bytes(2, "big")
    body += _mqtt_string(client_id)
    if username:
        body += _mqtt_string(username) + (_mqtt_string(password) if password else b"")
    length, size = b"", len(body)
    while True:  # remaining length: 7 bits per byte, high bit = more
        size, digit = divmod(size, 128)
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            break
    return b"\x10" + length + body


def mqtt_handshake(host: str, port: int, username: str, password: str, timeout: float) -> int:
    """CONNECT, read the CONNACK, DISCONNECT; the CONNACK return code (0 = accepted)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(mqtt_connect_packet(f"tigo-execd-doctor-{os.getpid()}", username, password))
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                break
            reply += chunk
        if len(reply) < 4 or reply[0] != 0x20 or reply[1] != 2:
            raise OSError(f"no MQTT CONNACK (got {reply!r}): is this an MQTT broker?")
        if reply[3] == 0:
            sock.sendall(b"\xe0\x00")
        return reply[3]
