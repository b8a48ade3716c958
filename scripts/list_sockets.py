"""List the listening sockets of a cluster started with `raysweep cluster up`.

    .venv/bin/python scripts/list_sockets.py [PROFILE_NAME]   # default: local

Prints one line per socket: bind address, process name, and whether it binds
beyond loopback. Uses `ss -ltnp` and the process groups in the cluster's state file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from raysweep.cluster.local import ClusterState


def listening(pgids: set[int]) -> list[tuple[str, str]]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        local = line.split()[3]
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            try:
                if os.getpgid(int(pid)) in pgids:
                    found.add((local, name))
            except ProcessLookupError:
                continue
    return sorted(found)


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "local"
    state = ClusterState.load(name)
    if state is None:
        sys.exit(f"cluster {name!r} is not up")
    for local, process in listening(set(state.pids)):
        host = local.rsplit(":", 1)[0].strip("[]")
        scope = "loopback" if host.startswith("127.") or host.endswith("127.0.0.1") else "BEYOND LOOPBACK"
        print(f"{local:28} {process:20} {scope}")


if __name__ == "__main__":
    main()
