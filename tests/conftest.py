from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from raysweep.testing.probe import probe_spec, write_probe_data
from raysweep.testing.seaweed import S3Server

REPO = Path(__file__).resolve().parents[1]
# Would send the suite's tokens, clusters and state to the user's own.
USER_SETTINGS = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HOME and RAYSWEEP_STATE_DIR in a temporary folder for the whole run, set before
    any Ray starts: the suite never reads or writes the user's ~/.ray (auth_token) or
    ~/.raysweep (cluster state), and a RAY_ADDRESS or token of the user's own never
    reaches it. Subprocesses and `ray start` nodes inherit it. Restored at the end."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(home))
        env.setenv("RAYSWEEP_STATE_DIR", str(home / ".raysweep"))
        for name in USER_SETTINGS:
            env.delenv(name, raising=False)
        yield home


@pytest.fixture(scope="session")
def probe_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probe-data")
    write_probe_data(root)
    return root


@pytest.fixture(scope="session")
def s3_server(isolated_home: Path, tmp_path_factory: pytest.TempPathFactory, probe_data: Path) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the whole run, holding the probe
    data under s3://data/probe/; the standard AWS variables point at it, set before
    any Ray starts so every worker reads with them (as a cloud node's environment
    would). Stopped by its process group at the end."""
    with S3Server(tmp_path_factory.mktemp("s3"), buckets=["data"], stop_timeout=2) as server:
        server.upload(probe_data, "data/probe")
        with pytest.MonkeyPatch.context() as env:
            for name in [n for n in os.environ if n.startswith("AWS_")]:
                env.delenv(name)
            for name, value in server.env().items():
                env.setenv(name, value)
            yield server


@pytest.fixture
def write_spec(tmp_path: Path, probe_data: Path):
    """write_spec(**overrides) -> path of a probe spec YAML in tmp_path."""

    def write(name: str = "spec.yaml", **overrides) -> Path:
        spec = probe_spec(probe_data, tmp_path / "results", tmp_path / "probe", **overrides)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec))
        return path

    return write


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raysweep.data.examples import write_digits_parquet

    root = tmp_path_factory.mktemp("digits")
    write_digits_parquet(root)
    return root


@pytest.fixture
def digits_spec(tmp_path: Path, digits_data: Path):
    """digits_spec(spec_file, **overrides) -> a copy of a search_spaces/ spec on the test data."""

    def write(name: str, **overrides) -> Path:
        raw = yaml.safe_load((REPO / "search_spaces" / name).read_text())
        raw["data"].update(train=str(digits_data / "train"), validation=str(digits_data / "validation"))
        raw["storage_path"] = str(tmp_path / "results")
        raw.update(overrides)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path

    return write


def pytest_collection_modifyitems(items):
    """Unit tests (no Ray) first, then the integration tests on the shared in-process
    cluster, then the ones that start their own `ray start` cluster."""
    items.sort(key=lambda item: ("integration" in str(item.fspath), "test_cluster" in str(item.fspath)))


@pytest.fixture
def fault_figures(request):
    """figures(**fields): one JSON line per fault case into $RAYSWEEP_FAULTS_OUT
    (scripts/faults.sh sums them up); a no-op when it is not set."""
    import json
    import os

    def record(**fields) -> None:
        out = os.environ.get("RAYSWEEP_FAULTS_OUT")
        if out:
            with open(out, "a") as handle:
                handle.write(json.dumps({"case": request.node.name, **fields}) + "\n")

    return record
