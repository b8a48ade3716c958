"""Connecting to Ray: an in-process local cluster by default, or RAY_ADDRESS."""

from __future__ import annotations

import logging
import os

import ray

from raysweep.profile import DEFAULT_PROFILE, ClusterProfile


def connect(profile: ClusterProfile = DEFAULT_PROFILE, address: str | None = None) -> bool:
    """Join the cluster at `address`, RAY_ADDRESS or the profile's address; else
    start a local one as the profile says.

    A local cluster binds to 127.0.0.1, dashboard included, and Ray 2.60 turns on
    token auth for it. The dashboard cannot be left out: Train V2's placement-group
    cleaner asks its state API whether a controller is alive, and without it the
    workers' CPUs of a trial that Tune stopped early are never given back.

    Returns True when this call initialised Ray (the caller then shuts it down).
    """
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or profile.address
    common = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=profile.num_cpus, num_gpus=profile.num_gpus, dashboard_host=profile.host,
                 _node_ip_address=profile.host, **common)
    return True


def cluster_capacity() -> tuple[float, float]:
    """(CPUs, GPUs) the connected cluster has in total."""
    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
