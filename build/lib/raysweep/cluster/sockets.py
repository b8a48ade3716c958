"""Which TCP sockets a cluster's processes listen on, read from /proc (Linux).

Used by `raysweep cluster up` (to name what a multi-node cluster binds beyond
loopback), by the security tests and by `scripts/list_sockets.py`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass

_LISTEN = "0A"


@dataclass(frozen=True, order=True)
class Listener:
    host: str
    port: int
    pid: int
    process: str

    @property
    def loopback(self) -> bool:
        address = ipaddress.ip_address(self.host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback

    @property
    def bind(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def as_dict(self) -> dict:
        return {**asdict(self), "bind": self.bind, "loopback_only": self.loopback}


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stat = handle.read()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rfind(")") + 2:].split()[1])
    return parents


def descendants(roots: Iterable[int]) -> list[int]:
    """`roots` and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found = list(dict.fromkeys(roots))
    index = 0
    while index < len(found):
        found += [c for c in children.get(found[index], []) if c not in found]
        index += 1
    return found


def in_groups(groups: Iterable[int]) -> list[int]:
    """Every process in the process groups `groups` (and what they started)."""
    wanted = set(groups)
    members = []
    for pid in _parents():
        try:
            if os.getpgid(pid) in wanted:
                members.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return descendants(members)


def _listen_table() -> dict[int, tuple[str, int]]:
    """socket inode -> (address, port) of every listening TCP socket on the machine."""
    table = {}
    for family, path in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        try:
            with open(path) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] != _LISTEN:
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            table[int(fields[9])] = (socket.inet_ntop(family, raw), int(port, 16))
    return table


def listening(pids: Iterable[int]) -> list[Listener]:
    """The listening TCP sockets the processes `pids` hold."""
    table = _listen_table()
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as handle:
                name = handle.read().strip()
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in table:
                    found.add(Listener(*table[inode], pid, name))
    return sorted(found)


def beyond_loopback(listeners: Iterable[Listener]) -> list[Listener]:
    return [item for item in listeners if not item.loopback]
