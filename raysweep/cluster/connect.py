"""Connecting to Ray: an in-process local cluster by default, or RAY_ADDRESS."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import ray

from raysweep._ray_compat import set_ray_env_defaults
from raysweep._upstream.cluster import gcs_refuses_token, loopback_only, record_cluster_address, use_token_auth
from raysweep.cluster.address import check_reachable
from raysweep.cluster.auth import token_available, token_env, token_file
from raysweep.cluster.isolation import PrivatePlace
from raysweep.cluster.local import cluster_at
from raysweep.cluster.network import SETUP_HOOK
from raysweep.config.profile import DEFAULT_PROFILE, ClusterProfile
from raysweep.errors import UserInputError


def connect(profile: ClusterProfile = DEFAULT_PROFILE, address: str | None = None) -> bool:
    """Join the cluster at `address`, RAY_ADDRESS or the profile's address; else
    start a local one as the profile says.

    A local cluster listens on 127.0.0.1 only (every socket: `isolation`), has its
    own Ray temp folder and its own token (a 0600 file in that folder; a user-set
    RAY_AUTH_TOKEN wins), and token auth on. The dashboard stays on: it serves the job
    API and the state API (Ray's own placement-group cleaner asks it; raysweep's runs
    use `_upstream.train`, which asks the GCS).

    Returns True when this call initialised Ray (the caller then shuts it down).
    """
    set_ray_env_defaults()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or profile.address
    # Every worker process pins gloo to the node's own address (cluster.network).
    common: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True,
                                  runtime_env={"worker_process_setup_hook": SETUP_HOOK})
    if address:
        check_reachable(address)
        own = cluster_at(address)
        if own is not None and not os.environ.get("RAY_AUTH_TOKEN"):
            os.environ.update(token_env(token_file(own.name)))  # a cluster `raysweep cluster up` started
        if token_available():
            use_token_auth()
        refused = UserInputError(
            f"{address}: the cluster did not let this process in; if it uses token auth, set "
            "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to its token (`ray get-auth-token` on its head prints it)")
        # A refused token is said at once (ray.init retries the refusal for about 20 s).
        if address != "auto" and "://" not in address and gcs_refuses_token(address):
            raise refused
        try:
            ray.init(address=address, **common)
        except ConnectionError:
            raise refused from None
    else:
        global _place
        _place = PrivatePlace()
        _place.enter()
        use_token_auth()
        try:
            # address="local": always a new cluster, even when `ray start` left one running.
            with loopback_only():
                ray.init(address="local", num_cpus=profile.num_cpus, num_gpus=profile.num_gpus,
                         dashboard_host=profile.host, _node_ip_address=profile.host, **common)
        except BaseException:
            _leave_place()
            raise
        record_cluster_address(ray.get_runtime_context().gcs_address)
    return True


_place: PrivatePlace | None = None


def _leave_place() -> None:
    global _place
    if _place is not None:
        _place.leave()
        _place = None


def disconnect() -> None:
    """Shut Ray down; an in-process cluster's private folder and token go with it."""
    ray.shutdown()
    _leave_place()


atexit.register(_leave_place)


@contextlib.contextmanager
def connected(profile: ClusterProfile = DEFAULT_PROFILE, address: str | None = None) -> Iterator[None]:
    """connect(), and shut Ray down on exit if this call started it."""
    started = connect(profile, address)
    try:
        yield
    finally:
        if started:
            disconnect()


def cluster_capacity() -> tuple[float, float]:
    """(CPUs, GPUs) the connected cluster has in total."""
    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))


def smallest_object_store() -> float | None:
    """Bytes of object store on the connected cluster's smallest alive node (None: no node says)."""
    sizes = [float(n["Resources"]["object_store_memory"]) for n in ray.nodes()
             if n.get("Alive") and n.get("Resources", {}).get("object_store_memory")]
    return min(sizes) if sizes else None
