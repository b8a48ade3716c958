"""One local Ray cluster (2 CPUs, 127.0.0.1) shared by every integration test."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from raysweep.cluster.connect import connect, disconnect
from raysweep.config.profile import ClusterProfile
from raysweep.testing.helpers import cluster_up, free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ray_cluster(isolated_home, s3_server):
    """The in-process cluster (started after HOME moved to a temporary folder, and
    with the test S3 server's AWS variables, which its workers inherit)."""
    started = connect(ClusterProfile(name="tests", num_cpus=2))
    yield ray.cluster_resources()
    if started:
        disconnect()


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """A `cluster up` cluster of the module's own: head (no CPU) + 2 worker nodes with
    1 CPU each, each its own process group (fault cases kill or drain a node)."""
    with cluster_up(tmp_path_factory.mktemp("fault-cluster"), {
            "name": "fault-nodes", "host": "127.0.0.1", "port": free_port(), "dashboard_port": free_port(),
            "num_cpus": 0, "worker_nodes": [{"num_cpus": 1}, {"num_cpus": 1}]}, cwd=REPO) as (profile, state, _):
        yield profile, state


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
