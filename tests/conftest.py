from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from raysweep.testing.probe import probe_spec, write_probe_data
from tests.support.mlflow_store import SqliteStores
from tests.support.seaweed import S3Server

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
def ray_cluster(isolated_home, s3_server):
    """The one local Ray cluster (2 CPUs, 127.0.0.1, in this process) the tests of the
    `ray` and `fault` tiers share: started after HOME moved to a temporary folder, and
    with the test S3 server's AWS variables, which its workers inherit."""
    import ray

    from raysweep.cluster.connect import connect, disconnect
    from raysweep.config.profile import ClusterProfile

    started = connect(ClusterProfile(name="tests", num_cpus=2))
    yield ray.cluster_resources()
    if started:
        disconnect()


@pytest.fixture(scope="session")
def mlflow_stores(tmp_path_factory: pytest.TempPathFactory) -> SqliteStores:
    """mlflow_stores.new(path) -> the URI of a new, empty MLflow sqlite store at path
    (a copy of one migrated once per session: tests/support/mlflow_store.py)."""
    return SqliteStores(tmp_path_factory.mktemp("mlflow-template"))


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch, mlflow_stores) -> str:
    uri = mlflow_stores.new(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def digits():
    """The digits in memory: 1,400 training and 397 validation rows (ArraySets)."""
    import numpy as np
    from sklearn.datasets import load_digits

    from raysweep.data.arrays import ArraySet

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return ArraySet.from_matrix(x[:1400], y[:1400]), ArraySet.from_matrix(x[1400:], y[1400:])


@pytest.fixture(scope="module")
def bench_script() -> Iterator[Any]:
    """scripts/bench.py (the benchmarks' command line) as the module `bench`."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import bench

        yield bench
    finally:
        sys.path.remove(str(REPO / "scripts"))


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


# ---------------------------------------------------------------- tiers
# Folder = tier = marker. scripts/test.sh runs each tier in a pytest of its own
# (`--tier=NAME`; with a space, `--tier cluster` would read the repo's cluster/ folder
# as a path), in this order; `scripts/test.sh --fast` the unit tier alone. `-m unit`
# etc. select a tier too, but replace addopts' `-m 'not slow'`.
TIERS = {
    "unit": "unit",  # no subprocess, no server, no Ray (tests/unit/conftest.py refuses them)
    "integration": "ray",  # processes, servers and the one shared local Ray cluster (`ray_cluster`)
    "cluster": "cluster",  # Ray clusters and hosts of their own (`ray start` nodes, `cluster up`)
    "faults": "fault",  # fault injection: killed workers, drivers, nodes and ranks, torn files
}
TIER_ORDER = list(TIERS.values())
TESTS = Path(__file__).resolve().parent


def tier_of(path: Path) -> str | None:
    """The tier of a test file: its folder under tests/ (None outside every tier's)."""
    try:
        parts = path.resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return TIERS.get(parts[0]) if len(parts) > 1 else None


FILE_SECONDS = {
    "test_stream_on_ray.py": 175, "test_s3.py": 130, "test_sweep.py": 260, "test_team_mlflow.py": 85,
    "test_strategies.py": 125, "test_column_examples.py": 140, "test_worker_groups.py": 95,
    "test_lightning_on_ray.py": 40, "test_warm_group.py": 36, "test_registry_safety.py": 30,
    "test_record.py": 28, "test_train_run.py": 30, "test_readme_commands.py": 20, "test_on_nan_on_ray.py": 65,
    "test_report_browser.py": 40,
}
"""Seconds each slow file of the ray tier took (its tests' --durations summed, rounded):
what `--shard` balances. A file not listed counts as DEFAULT_FILE_SECONDS."""
DEFAULT_FILE_SECONDS = 10


def shard_files(files: list[str], count: int) -> list[set[str]]:
    """`files` (names) in `count` sets of about equal FILE_SECONDS, longest first, each to
    the lightest set so far (a file's tests stay together: module fixtures)."""
    shards: list[set[str]] = [set() for _ in range(count)]
    load = [0.0] * count
    for name in sorted(files, key=lambda n: (-FILE_SECONDS.get(n, DEFAULT_FILE_SECONDS), n)):
        lightest = load.index(min(load))
        shards[lightest].add(name)
        load[lightest] += FILE_SECONDS.get(name, DEFAULT_FILE_SECONDS)
    return shards


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tier", action="append", choices=TIER_ORDER, default=[],
                     help="run only the tests of this tier (repeatable): " + ", ".join(TIER_ORDER))
    parser.addoption("--shard", default=None, metavar="K/N",
                     help="run only the K-th of N sets of test files of about equal time (FILE_SECONDS): "
                     "N pytests at once, each with its own cluster and servers, run the selection")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its folder's tier, keep those of `--tier`, and order them:
    tier by tier; within one, modules named test_cluster* (`ray start` clusters of
    their own) after the rest."""
    tiers: dict[str, str] = {}
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid}: a test outside the tier folders; put it in one of "
                                    + ", ".join(f"tests/{folder}/" for folder in TIERS))
        item.add_marker(tier)
        tiers[item.nodeid] = tier
    wanted = config.getoption("tier")
    if wanted:
        deselected = [item for item in items if tiers[item.nodeid] not in wanted]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if tiers[item.nodeid] in wanted]
    shard = config.getoption("shard")
    if shard:
        k, n = (int(x) for x in shard.split("/"))
        mine = shard_files(sorted({item.path.name for item in items}), n)[k - 1]
        deselected = [item for item in items if item.path.name not in mine]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if item.path.name in mine]
    items.sort(key=lambda item: (TIER_ORDER.index(tiers[item.nodeid]), item.path.name.startswith("test_cluster")))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """With $RAYSWEEP_FAULTS_OUT set, every case that records fault figures also records
    that it ran and whether it passed (`runs`, `passed`: scripts/faults.sh's pass counts)."""
    outcome = yield
    report = outcome.get_result()
    out = os.environ.get("RAYSWEEP_FAULTS_OUT")
    if not out or "fault_figures" not in getattr(item, "fixturenames", ()):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        import json

        with open(out, "a") as handle:
            handle.write(json.dumps({"case": item.name, "runs": 1, "passed": int(report.passed)}) + "\n")


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
