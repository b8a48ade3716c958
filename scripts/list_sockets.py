"""List the listening sockets of a cluster started with `raysweep cluster up`.

    .venv/bin/python scripts/list_sockets.py [PROFILE_NAME]   # default: local

Prints one line per socket: bind address, process name, and whether it binds
beyond loopback. Read from /proc for the process groups in the cluster's state file.
"""

from __future__ import annotations

import sys

from raysweep.cluster.local import ClusterState, sockets


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "local"
    state = ClusterState.load(name)
    if state is None or not state.alive():
        sys.exit(f"cluster {name!r} is not up")
    for item in sockets(state):
        print(f"{item.bind:28} {item.process:20} {'loopback' if item.loopback else 'BEYOND LOOPBACK'}")


if __name__ == "__main__":
    main()
