"""Cluster profiles (`cluster/*.yaml`): where a run goes."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError

from raysweep._upstream.cluster import validate_launcher_config as ray_validate
from raysweep.config.load import describe_error, read_spec_file
from raysweep.config.spec import _Section
from raysweep.errors import UserInputError


class WorkerNode(_Section):
    """One extra node `raysweep cluster up` starts on this machine."""

    num_cpus: int = Field(default=1, ge=0)
    """CPUs the node offers to Ray (0: it runs no training, only what its custom
    resources attract)."""
    num_gpus: int = Field(default=0, ge=0)
    """GPUs the node offers to Ray."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom resources, e.g. {preemptible: 1}."""


ACCELERATOR = "accelerator_type:"
"""The prefix of Ray's accelerator resource label (`accelerator_type:A100`): what a
node with that GPU offers and what `scaling.accelerator_type` asks for."""
AWS_ACCELERATORS = {"p3": "V100", "p3dn": "V100", "p4d": "A100", "p4de": "A100", "p5": "H100", "p5e": "H200",
                    "p5en": "H200", "g4dn": "T4", "g5": "A10G", "g6": "L4", "g6e": "L40S"}
"""GPU of an EC2 instance family (what Ray's AWS node provider labels its nodes with)."""
GCP_ACCELERATORS = {"nvidia-tesla-v100": "V100", "nvidia-tesla-t4": "T4", "nvidia-tesla-a100": "A100",
                    "nvidia-a100-80gb": "A100", "nvidia-l4": "L4", "nvidia-h100-80gb": "H100",
                    "nvidia-h100-mega-80gb": "H100", "nvidia-h200-141gb": "H200"}
GCP_MACHINE_ACCELERATORS = {"a2": "A100", "a3": "H100", "g2": "L4"}
"""GPU of a GCP accelerator type, and of the machine families that come with one."""


def accelerator_of(resources: dict[str, float], node_config: dict) -> str | None:
    """The GPU type a node type offers: an explicit `accelerator_type:X` resource, else
    the one its instance (AWS InstanceType) or machine (GCP guestAccelerators,
    machineType) comes with; None if neither says."""
    for name in resources:
        if name.startswith(ACCELERATOR):
            return name[len(ACCELERATOR):]
    instance = str(node_config.get("InstanceType", ""))
    if instance:
        return AWS_ACCELERATORS.get(instance.split(".")[0])
    for accelerator in node_config.get("guestAccelerators", []) or []:
        kind = str(accelerator.get("acceleratorType", "")).rsplit("/", 1)[-1]
        if kind in GCP_ACCELERATORS:
            return GCP_ACCELERATORS[kind]
    machine = str(node_config.get("machineType", "")).rsplit("/", 1)[-1]
    return GCP_MACHINE_ACCELERATORS.get(machine.split("-")[0]) if machine else None


class NodeType(_Section):
    """One worker node type of an autoscaling cluster (a launcher config's
    `available_node_types` entry)."""

    resources: dict[str, float] = Field(default_factory=dict)
    """What one node of this type offers, CPU and GPU included (set them explicitly in
    the launcher config: they size a sweep before any node is up)."""
    min_workers: int = Field(default=0, ge=0)
    """Nodes of this type kept up even when idle."""
    max_workers: int = Field(default=0, ge=0)
    """The most nodes of this type the autoscaler starts."""
    accelerator_type: str | None = None
    """The GPU type its nodes have (see accelerator_of); None: none known."""


class ClusterProfile(_Section):
    """Where runs go: a Ray cluster started here, or one to join."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Profile name: keys the state (address, pids, logs) of a cluster that
    `raysweep cluster up` starts."""
    address: str | None = None
    """None: start Ray here (in-process, or with `raysweep cluster up`);
    `host:port` or `auto`: join that cluster."""
    host: str = "127.0.0.1"
    """Bind address of a cluster started here."""
    port: int = Field(default=6379, ge=1, le=65535)
    """GCS port of a cluster started with `raysweep cluster up`."""
    dashboard_port: int = Field(default=8265, ge=1, le=65535)
    """Dashboard (and job API, for `raysweep submit`) port of a cluster started with
    `raysweep cluster up`."""
    num_cpus: int | None = Field(default=None, ge=0)
    """CPUs of the head node (None: every core; 0: the head runs no training)."""
    num_gpus: int | None = Field(default=None, ge=0)
    """GPUs of the head node (None: the GPUs Ray detects)."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom resources of the head node."""
    worker_nodes: list[WorkerNode] = Field(default_factory=list)
    """Extra nodes `raysweep cluster up` starts (rehearsing a multi-node run)."""
    trial_driver_resources: dict[str, float] = Field(default_factory=dict)
    """Custom resources each trial's driver asks for, e.g. {on_demand: 0.01}: keeps
    drivers (and Train's controllers) off preemptible nodes that lack them."""
    shared_paths: list[str] = Field(default_factory=list)
    """Local paths every node of a joined cluster sees (an NFS mount, say)."""
    node_types: dict[str, NodeType] = Field(default_factory=dict)
    """An autoscaling cluster's worker node types (from a launcher config): a sweep's
    concurrency is what their maximum counts can hold, not what is up when it starts."""
    max_workers: int | None = Field(default=None, ge=0)
    """An autoscaling cluster's limit on worker nodes of all types together."""
    launcher: bool = False
    """Derived from a Ray cluster launcher config (a cloud cluster: it spans hosts)."""

    def max_capacity(self) -> dict[str, float]:
        """Resources with every node type at its maximum count (the global
        `max_workers` spent on the types in the order given), plus the head's."""
        total: dict[str, float] = {"CPU": float(self.num_cpus or 0), "GPU": float(self.num_gpus or 0),
                                   **self.resources}
        types = self.node_types.values()
        left = self.max_workers if self.max_workers is not None else sum(t.max_workers for t in types)
        for node_type in types:
            count = min(node_type.max_workers, left)
            left -= count
            for name, amount in node_type.resources.items():
                total[name] = total.get(name, 0.0) + count * amount
        return total

    def driver_slots(self) -> float:
        """How many trial drivers the node types can hold at their maximum counts
        (trial_driver_resources; unbounded without them)."""
        capacity = self.max_capacity()
        return min((capacity.get(name, 0.0) / amount for name, amount in self.trial_driver_resources.items()
                    if amount > 0), default=float("inf"))

    def largest_node(self, cpus: float, gpus: float) -> str | None:
        """None when the head or one node type holds `cpus` CPUs and `gpus` GPUs (one
        worker: Ray places it on one node); else a description of what the nodes hold."""
        nodes = {"head": (float(self.num_cpus or 0), float(self.num_gpus or 0))}
        nodes.update({name: (float(t.resources.get("CPU", 0)), float(t.resources.get("GPU", 0)))
                      for name, t in self.node_types.items() if t.max_workers > 0})
        if any(c + 1e-9 >= cpus and g + 1e-9 >= gpus for c, g in nodes.values()):
            return None
        return ", ".join(f"{name} {c:g} CPUs/{g:g} GPUs" for name, (c, g) in nodes.items())

    def accelerator_types(self) -> set[str] | None:
        """The GPU types the cluster's nodes offer: its node types' (autoscaling) or its
        head's and worker nodes' `accelerator_type:X` resources (a local cluster); None
        for a cluster joined by address, whose nodes are not known before it runs."""
        if self.node_types:
            return {t.accelerator_type for t in self.node_types.values()
                    if t.accelerator_type and t.max_workers > 0}
        if self.address not in (None, "auto") and not self.worker_nodes:
            return None
        offered = [self.resources, *(node.resources for node in self.worker_nodes)]
        return {name[len(ACCELERATOR):] for resources in offered for name in resources if name.startswith(ACCELERATOR)}

    def spans_hosts(self) -> bool:
        """Whether nodes may sit on other machines (a joined, non-loopback cluster)."""
        if self.launcher:
            return True
        if self.address is None or self.address == "auto":
            return False
        host = self.address.split("://")[-1].rpartition(":")[0]
        return host not in ("127.0.0.1", "localhost", "::1")


def check_storage(profile: ClusterProfile, storage_path: str, source: str) -> None:
    """Multi-host clusters need run storage every node sees (checkpoints from every
    node must reach it)."""
    if not profile.spans_hosts() or "://" in storage_path:
        return
    resolved = Path(storage_path).resolve()
    if any(resolved.is_relative_to(Path(p).resolve()) for p in profile.shared_paths):
        return
    raise UserInputError(
        f"{source}: storage_path: {storage_path!r} is a local path that only this machine sees, but "
        f"cluster {profile.name!r} at {profile.address} spans hosts; use s3://, gs:// or a path "
        "listed in the profile's shared_paths"
    )


def is_launcher_config(raw: dict) -> bool:
    """A Ray cluster launcher config (cloud profile), handed over to `ray up`."""
    return "provider" in raw and "cluster_name" in raw


def validate_launcher_config(raw: dict, path: str | Path) -> None:
    """Validate against Ray's own cluster config schema, as `ray up` does."""
    import jsonschema  # (lazy: a Ray dependency, needed for cloud profiles only)

    try:
        ray_validate(raw)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise UserInputError(f"{path}: {where}: {exc.message}") from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UserInputError(f"{path}: {exc}") from None


DEFAULT_PROFILE = ClusterProfile(name="local")

TRIAL_DRIVER = "trial_driver"
"""The custom resource a launcher config's on-demand node types offer (e.g.
`resources: {..., "trial_driver": 4}`: four trial drivers per node). A launcher
profile with such a node type pins each trial's driver, and with it Train's
controller, to them (one unit each): a spot node that is reclaimed takes trial
workers with it, never the process that drives the trial."""


def profile_from_launcher(raw: dict, path: str | Path) -> ClusterProfile:
    """A launcher config as a profile: runs join the cluster they run in (`auto`: a job
    on its head), sized by its node types' maximum counts."""
    validate_launcher_config(raw, path)
    types = raw.get("available_node_types", {})
    head = types.get(raw.get("head_node_type"), {})
    head_resources = dict(head.get("resources", {}))
    try:
        return ClusterProfile(
            name=raw["cluster_name"], address="auto", launcher=True,
            num_cpus=int(head_resources.pop("CPU")) if "CPU" in head_resources else None,
            num_gpus=int(head_resources.pop("GPU")) if "GPU" in head_resources else None,
            resources=head_resources, max_workers=raw.get("max_workers"),
            trial_driver_resources={TRIAL_DRIVER: 1.0} if any(
                TRIAL_DRIVER in t.get("resources", {}) for t in types.values()) else {},
            node_types={name: NodeType(resources=t.get("resources", {}), min_workers=t.get("min_workers", 0),
                                       max_workers=t.get("max_workers", 0),
                                       accelerator_type=accelerator_of(t.get("resources", {}),
                                                                       t.get("node_config", {}) or {}))
                        for name, t in types.items() if name != raw.get("head_node_type")})
    except ValidationError as exc:
        raise UserInputError(f"{path}: {describe_error(exc.errors()[0])}") from None


def load_profile(path: str | Path | None) -> ClusterProfile:
    """The profile at `path` (validated like a spec; a launcher config becomes one,
    see profile_from_launcher), or the embedded local default."""
    if path is None:
        return DEFAULT_PROFILE
    raw = read_spec_file(path, what="profile")
    if is_launcher_config(raw):
        return profile_from_launcher(raw, path)
    try:
        return ClusterProfile.model_validate(raw)
    except ValidationError as exc:
        raise UserInputError(f"{path}: {describe_error(exc.errors()[0])}") from None
