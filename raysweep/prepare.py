"""Everything that can refuse input, checked before Ray or MLflow start.

`prepare` loads the spec (a file with `--set` overrides, or a `Spec`), the cluster
profile, the data's schema and the trainer; it starts nothing and writes nothing,
so `raysweep check` imports neither Ray nor MLflow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from raysweep.cluster.address import check_reachable
from raysweep.config.load import load_spec
from raysweep.config.profile import ClusterProfile, check_storage, load_profile
from raysweep.config.spec import Spec
from raysweep.data.files import ResolvedData, resolve_data
from raysweep.driver.plan import max_concurrent_trials
from raysweep.driver.preflight import check_trainer
from raysweep.errors import UserInputError


@dataclass(frozen=True)
class Prepared:
    """A run that may start: its spec, data, cluster profile, and where they came from."""

    spec: Spec
    data: ResolvedData
    profile: ClusterProfile
    source: str
    """The spec file (or what the spec came from), for messages and the record."""
    overrides: tuple[str, ...]
    address: str | None
    """The Ray cluster to join (None: start one in-process)."""
    profile_path: str | None = None


def prepare(spec: str | Path | Spec, overrides: tuple[str, ...] | list[str] = (), *,
            cluster: str | None = None, address: str | None = None, source: str | None = None,
            will_connect: bool = True) -> Prepared:
    """Validate a run without starting it. Raises UserInputError (one line)."""
    if isinstance(spec, Spec):
        source = source or "spec"
    else:
        source = source or str(spec)
        spec = load_spec(spec, list(overrides))
    profile = load_profile(cluster)
    check_storage(profile, spec.storage_path, source)
    address = address or os.environ.get("RAY_ADDRESS") or profile.address
    if address and will_connect:
        check_reachable(address)
    data = resolve_data(spec.data, source)
    check_trainer(spec, data, source)
    if data.num_train_rows < spec.scaling.num_workers:
        raise UserInputError(
            f"{source}: scaling.num_workers: {spec.scaling.num_workers} workers need at least "
            f"as many training rows, got {data.num_train_rows}"
        )
    if spec.sampler.warm_start:
        from raysweep.config.load import storage_root
        from raysweep.tracking.study import study_exists  # (Optuna: only for a warm start)

        root = storage_root(spec.storage_path, spec.name)
        if not study_exists(f"{root}/{spec.sampler.warm_start}", spec.name):
            raise UserInputError(f"{source}: sampler.warm_start: no sweep {spec.sampler.warm_start!r} with an "
                                 f"Optuna study under {root}")
    wanted = spec.scaling.accelerator_type
    # (a cluster reached by address alone: its nodes are not known before it runs)
    offered = None if address and not (profile.node_types or profile.worker_nodes) else profile.accelerator_types()
    if wanted and offered is not None and wanted not in offered:
        raise UserInputError(
            f"{source}: scaling.accelerator_type: {wanted!r} is offered by no node of cluster "
            f"{cluster or profile.name} (its GPU types: {', '.join(sorted(offered)) or 'none'})")
    if profile.node_types:  # an autoscaling cluster: whether one trial fits is known now
        scaling = spec.scaling
        nodes = profile.largest_node(scaling.cpus_per_worker, scaling.gpus_per_worker)
        if nodes is not None:
            raise UserInputError(
                f"{source}: scaling.cpus_per_worker/gpus_per_worker: one worker needs {scaling.cpus_per_worker:g} "
                f"CPUs and {scaling.gpus_per_worker:g} GPUs on one node, but no node type of cluster {cluster} "
                f"holds that ({nodes})")
        capacity = profile.max_capacity()
        try:
            max_concurrent_trials(spec.scaling, spec.budget, capacity["CPU"], capacity["GPU"])
        except UserInputError as exc:
            raise UserInputError(f"{source}: {exc} (cluster {cluster}: its node types at their maximum "
                                 "counts)") from None
        if profile.driver_slots() < 1:
            wanted = ", ".join(f"{k}: {v:g}" for k, v in profile.trial_driver_resources.items())
            raise UserInputError(
                f"{cluster}: trial drivers need {{{wanted}}} (on-demand nodes), but no node type can be started "
                "with it (at their maximum counts: check max_workers and the node types' resources)")
    return Prepared(spec, data, profile, source, tuple(overrides), address, cluster)
