"""Ray cluster addresses, checked without Ray: fail fast, naming the address."""

from __future__ import annotations

import socket

from raysweep.errors import UserInputError


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail within seconds, naming the address, when nothing listens there."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserInputError(f"{address}: a Ray address is host:port (or 'auto')")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserInputError(f"{address}: no Ray cluster answers there ({exc.strerror or exc})") from None
