"""One local Ray cluster (2 CPUs, 127.0.0.1) shared by every integration test."""

from __future__ import annotations

import pytest
import ray

from raysweep.cluster.connect import connect, disconnect
from raysweep.config.profile import ClusterProfile


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


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
