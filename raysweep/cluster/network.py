"""Where a training process's collective sockets listen (worker side: stdlib only).

Gloo picks its interface from the machine's hostname, and falls back to loopback when
the name does not resolve; on many images the hostname resolves to 127.0.1.1. Either
way a rank on another machine is then told to connect to 127.0.0.1 ("Gloo
connectFullMesh failed ... Connection refused, remote=[127.0.0.1]"): a multi-node
gloo group never forms. Every Ray worker process of a raysweep driver runs
`pin_gloo_interface` at start (the runtime env's `worker_process_setup_hook`, set by
`cluster.connect`): GLOO_SOCKET_IFNAME names the interface that holds the Ray node's
own address, so gloo listens, and advertises, where Ray itself does (loopback on a
local cluster). A GLOO_SOCKET_IFNAME the user set wins. NCCL picks its own interface
(never loopback) and is left alone.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

SETUP_HOOK = "raysweep.cluster.network.pin_gloo_interface"  # (Ray: module.attr)
_SIOCGIFADDR = 0x8915


def interface_of(address: str) -> str | None:
    """The name of the interface whose IPv4 address is `address` (None if none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address
                continue
            if socket.inet_ntoa(answer[20:24]) == address:
                return name
    return None


def pin_gloo_interface() -> None:
    """Set GLOO_SOCKET_IFNAME to the interface of this Ray node's address (see above)."""
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    import ray

    name = interface_of(ray.util.get_node_ip_address())
    if name:
        os.environ["GLOO_SOCKET_IFNAME"] = name
