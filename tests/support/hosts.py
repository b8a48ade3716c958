"""Hosts that share nothing with the laptop, on one machine (root only).

    with Hosts(tmp_path / "hosts", count=3, hide=[repo]) as hosts:
        hosts.ssh(hosts[0], "hostname; ls ~")        # through its sshd, with the key made here
        hosts.cut(hosts[1]); hosts.restore(hosts[1])  # the network cable
        hosts.kill(hosts[0]); hosts.wipe(hosts[0])     # power and disk

Each host is:
- a network namespace with one interface (`eth0`, an address in a random /24 of
  198.18.0.0/15, the range set aside for network tests) on a bridge; the laptop (this
  machine's own namespace) is `.1` on that bridge. No NAT, no forwarding: the hosts
  reach each other and the laptop, nothing else;
- a mount namespace, a process id namespace (`ray stop` on one host must not see, and
  kill, another's Ray) and a hostname of its own: its own HOME (/root) and /tmp, /run,
  /dev/shm, a disk folder of its own under `root`. The laptop's HOME, /tmp (the test's
  folders) and the folders in `hide` (the repo) are not visible. What a cloud image
  would hold, it may read: the Python stack (this environment's site-packages, read
  only at /opt/stack) behind an interpreter at /opt/raysweep-env/bin (on PATH of a
  login shell), and the base Python at its own path (libpython is found by an absolute
  rpath). raysweep itself is NOT on it: code arrives only the way Ray or its cluster
  launcher ships it;
- an sshd (root, key only: the key `key` made here) on port 22 of its address.

Torn down by process id and namespace name (`stop`, also from `__exit__` after a
failed test): every process in each namespace is killed, the namespaces, the bridge
and their interfaces deleted. Names carry a random run id, so two runs never cross.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

NETWORK = ipaddress.ip_network("198.18.0.0/15")
IMAGE = "/opt/raysweep-env"
STACK = "/opt/stack"


@dataclass
class Host:
    name: str
    netns: str
    ip: str
    disk: Path
    veth: str
    sshd: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        """The host's /root, as the laptop sees it (its disk)."""
        return self.disk / "home"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 no interface or route of this machine uses."""
    used = _ip("-o", "addr").stdout + _ip("route").stdout
    subnets = list(NETWORK.subnets(new_prefix=24))
    random.shuffle(subnets)
    for subnet in subnets:
        prefix = ".".join(str(subnet.network_address).split(".")[:3]) + "."
        if prefix not in used:
            return subnet
    raise RuntimeError("no free /24 in 198.18.0.0/15")


def make_image(root: Path) -> Path:
    """An interpreter prefix the hosts run: a venv of this machine's base Python whose
    site-packages reads the stack at STACK (the hosts' read-only view of this
    environment's site-packages, whose .pth files, raysweep's editable install among
    them, are not processed), and a `ray` script."""
    root.mkdir(parents=True)
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (root / "bin").mkdir()
    site = root / "lib" / version / "site-packages"
    site.mkdir(parents=True)
    (root / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\ninclude-system-site-packages = false\n"
                                     f"version = {sys.version_info.major}.{sys.version_info.minor}."
                                     f"{sys.version_info.micro}\n")
    for name in ("python", "python3", version):
        (root / "bin" / name).symlink_to(Path(sys._base_executable).resolve())  # type: ignore[attr-defined]
    (site / "stack.pth").write_text(STACK + "\n")
    for script, module in (("ray", "ray.scripts.scripts"),):
        path = root / "bin" / script
        path.write_text(f"#!{IMAGE}/bin/python\nimport sys\nfrom {module} import main\nsys.exit(main())\n")
        path.chmod(0o755)
    return root


class Hosts:
    def __init__(self, root: Path, count: int = 3, hide: list[Path] | None = None) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("hosts need root (network and mount namespaces)")
        self.root = Path(root)
        self.count = count
        self.run_id = secrets.token_hex(3)
        self.bridge = f"rs{self.run_id}b"
        self.hide = [Path(p).resolve() for p in (hide or [])]
        self.hosts: list[Host] = []
        self.subnet: ipaddress.IPv4Network | None = None
        self.laptop_ip = ""
        self.key = self.root / "key"
        self.env: dict[str, str] = {}

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __enter__(self) -> Hosts:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- building ---------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.image = make_image(self.root / "image")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "raysweep-hosts", "-f",
                        str(self.key)], check=True)
        self.subnet = _free_subnet()
        addresses = list(self.subnet.hosts())
        self.laptop_ip = str(addresses[0])
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.laptop_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(self.count):
            host = Host(name=f"h{i}", netns=f"rs{self.run_id}h{i}", ip=str(addresses[10 + i]),
                        disk=self.root / f"h{i}", veth=f"rs{self.run_id}v{i}")
            self.hosts.append(host)
            self._network(host)
            self._disk(host)
            self.boot(host)
        for host in self.hosts:
            self.wait_ssh(host)

    def _network(self, host: Host) -> None:
        _ip("netns", "add", host.netns)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", f"{host.veth}p")
        _ip("link", "set", f"{host.veth}p", "netns", host.netns)
        _ip("link", "set", host.veth, "master", self.bridge)
        _ip("link", "set", host.veth, "up")
        inside = ["netns", "exec", host.netns, "ip"]
        _ip(*inside, "link", "set", f"{host.veth}p", "name", "eth0")
        _ip(*inside, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "link", "set", "lo", "up")
        # A default route on the link, no gateway: Ray finds its node address by the
        # route to the internet; nothing leaves the bridge.
        _ip(*inside, "route", "add", "default", "dev", "eth0")

    def _disk(self, host: Host) -> None:
        for sub in ("home/.sshd", "tmp"):
            (host.disk / sub).mkdir(parents=True, exist_ok=True)
        (host.disk / "tmp").chmod(0o1777)
        sshd = host.home / ".sshd"
        if not (sshd / "host_key").exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sshd / "host_key")], check=True)
        shutil.copy(f"{self.key}.pub", sshd / "authorized_keys")
        (sshd / "sshd_config").write_text(textwrap.dedent(f"""\
            ListenAddress {host.ip}
            Port 22
            HostKey /root/.sshd/host_key
            PidFile /root/.sshd/sshd.pid
            AuthorizedKeysFile /root/.sshd/authorized_keys
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            AllowTcpForwarding yes
            MaxStartups 100
            MaxSessions 100
            Subsystem sftp internal-sftp
            """))
        bashrc = host.home / ".bashrc"
        if not bashrc.exists():  # the image's shell setup: its Python environment on PATH, its variables
            exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items())
            bashrc.write_text(f"export PATH={IMAGE}/bin:$PATH\n{exports}")
            (host.home / ".profile").write_text("[ -f ~/.bashrc ] && . ~/.bashrc\n")

    def _mount_script(self, host: Host) -> str:
        base = Path(sys.base_prefix).resolve()
        stack = Path(sysconfig.get_paths()["purelib"]).resolve()
        homes = {Path("/root"), Path(os.path.expanduser("~")).resolve()}
        q = shlex.quote
        lines = [
            "set -e",
            f"hostname {host.name}",
            # what the host may read, taken before the laptop's folders are covered
            "mount -t tmpfs -o mode=755 image /opt",
            f"mkdir -p {IMAGE} {STACK} /opt/.python",
            f"mount --bind {q(str(self.image))} {IMAGE} && mount -o remount,bind,ro {IMAGE}",
            f"mount --bind {q(str(stack))} {STACK} && mount -o remount,bind,ro {STACK}",
            f"mount --bind {q(str(base))} /opt/.python && mount -o remount,bind,ro /opt/.python",
            f"mount --bind {q(str(host.home))} /root",
            *[f"mount -t tmpfs -o mode=700 hidden {q(str(h))}" for h in sorted(homes) if h != Path("/root")],
            *[f"mount -t tmpfs -o mode=755 hidden {q(str(h))}" for h in self.hide],
            f"mount --bind {q(str(host.disk / 'tmp'))} /tmp",
            "mount -t tmpfs -o mode=1777 shm /dev/shm",
            "mount -t tmpfs -o mode=755 run /run && mkdir -p /run/sshd",
            # the base Python at its own path, read only (libpython's rpath is absolute)
            f"mkdir -p {q(str(base))} && mount --bind /opt/.python {q(str(base))}",
            "cd /root",
            "exec /usr/sbin/sshd -D -e -f /root/.sshd/sshd_config",
        ]
        return "\n".join(lines)

    def boot(self, host: Host) -> None:
        """Start the host's sshd in a new mount namespace (its disk mounted again)."""
        log = open(host.disk / "sshd.log", "ab")
        host.sshd = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
             "--propagation", "private", "sh", "-c", self._mount_script(host)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def wait_ssh(self, host: Host, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = self.ssh(host, "true", check=False, timeout=10)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline or (host.sshd and host.sshd.poll() is not None):
                log = (host.disk / "sshd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{host.name}: sshd did not answer: {result.stderr.strip()}\n{log}")
            time.sleep(0.3)

    # -- using ------------------------------------------------------------------------

    def ssh_args(self, host: Host) -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                "-o", "BatchMode=yes", f"root@{host.ip}"]

    def ssh(self, host: Host, command: str, check: bool = True, timeout: float | None = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """`command` in a login shell on the host, over SSH."""
        result = subprocess.run([*self.ssh_args(host), f"bash -lc {shlex.quote(command)}"], capture_output=True,
                                text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise RuntimeError(f"{host.name}: {command!r} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def environment(self, env: dict[str, str]) -> None:
        """Variables every host's login shell sets (what an image or an admin puts in a
        machine's environment: credentials of its own, say); a wiped host gets them too."""
        self.env.update(env)
        lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        for host in self.hosts:
            with open(host.home / ".bashrc", "a") as bashrc:
                bashrc.write(lines)

    def pids(self, host: Host) -> list[int]:
        out = _ip("netns", "pids", host.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def kill(self, host: Host) -> None:
        """Power off: SIGKILL to every process of the host (its sshd included)."""
        for _ in range(5):
            pids = self.pids(host)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        if host.sshd is not None:
            try:
                host.sshd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            host.sshd = None

    def wipe(self, host: Host) -> None:
        """A new disk: the host's HOME and /tmp emptied (sshd's key setup kept)."""
        for sub in ("home", "tmp"):
            shutil.rmtree(host.disk / sub, ignore_errors=True)
        self._disk(host)

    def cut(self, host: Host) -> None:
        """Unplug the host's network (its processes live on)."""
        _ip("link", "set", host.veth, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.veth, "up")

    def listening(self, host: Host) -> list[tuple[str, int, str]]:
        """(address, port, process) of every TCP socket listening in the host."""
        out = subprocess.run(["ip", "netns", "exec", host.netns, "ss", "-Htlnp"], capture_output=True,
                             text=True).stdout
        found = []
        for line in out.splitlines():
            parts = line.split()
            local = parts[3]
            address, _, port = local.rpartition(":")
            process = parts[5] if len(parts) > 5 else ""
            found.append((address.strip("[]"), int(port), process))
        return found

    def stop(self) -> None:
        for host in self.hosts:
            self.kill(host)
            _ip("netns", "del", host.netns, check=False)
            _ip("link", "del", host.veth, check=False)
        _ip("link", "del", self.bridge, check=False)

    def leftovers(self) -> list[str]:
        """Namespaces and links of this run still on the machine (none after stop)."""
        names = _ip("netns", "list").stdout + _ip("-o", "link").stdout
        return [line for line in names.splitlines() if f"rs{self.run_id}" in line]
