"""Fixtures of the fault tier (the shared cluster, `ray_cluster`, is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep.testing.helpers import cluster_up, free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nodes(request, tmp_path_factory):
    """A `cluster up` cluster of the module's own: head (no CPU) + 2 worker nodes (the
    module's WORKER_NODES, if it sets it) with 1 CPU each, each its own process group
    (fault cases kill or drain a node)."""
    workers = int(getattr(request.module, "WORKER_NODES", 2))
    with cluster_up(tmp_path_factory.mktemp("fault-cluster"), {
            "name": "fault-nodes", "host": "127.0.0.1", "port": free_port(), "dashboard_port": free_port(),
            "num_cpus": 0, "worker_nodes": [{"num_cpus": 1}] * workers}, cwd=REPO) as (profile, state, _):
        yield profile, state
