"""Cluster profiles: cloud launcher configs against Ray's schema, the KubeRay
manifest's structure, and the errors bad profiles and addresses get (no Ray)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray
import yaml

from raysweep.cli import main
from raysweep.cluster.submit import check_upload
from raysweep.config.profile import validate_launcher_config
from raysweep.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_cloud_profiles_pass_rays_cluster_schema(name) -> None:
    raw = yaml.safe_load((REPO / "cluster" / name).read_text())
    validate_launcher_config(raw, name)  # prepare_config + validate_config, as `ray up`
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head, "dashboard must not be open"
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in " ".join(raw["worker_start_ray_commands"])
    assert any("-c constraints.txt" in c for c in raw["setup_commands"])
    gpu_types = [t for t in raw["available_node_types"].values()
                 if "nvidia" in str(t["node_config"]) or "g5." in str(t["node_config"])]
    assert gpu_types and raw["max_workers"] >= 1


def test_launcher_config_with_unknown_key_names_file_and_key(tmp_path) -> None:
    raw = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    raw["available_node_types"]["head"]["min_wrkers"] = 1
    with pytest.raises(UserInputError, match=r"^bad.yaml: available_node_types.head: .*'min_wrkers' was unexpected"):
        validate_launcher_config(raw, "bad.yaml")
    raw = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    raw["max_workers"] = "many"
    with pytest.raises(UserInputError, match=r"^bad.yaml: max_workers: 'many' is not of type"):
        validate_launcher_config(raw, "bad.yaml")


def test_kuberay_manifest_structure() -> None:
    """No RayJob CRD schema is available offline; this checks, by name: kind and API
    version, the entrypoint runs a sweep, a GPU worker group, token auth from a Secret
    on head, workers and the job submitter, and a ClusterIP (not exposed) head."""
    (job,) = [d for d in yaml.safe_load_all((REPO / "cluster" / "kuberay.yaml").read_text()) if d["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("python -m raysweep tune ")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
    (workers,) = cluster["workerGroupSpecs"]
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pods = [cluster["headGroupSpec"]["template"], workers["template"], job["spec"]["submitterPodTemplate"]]
    for pod in pods:
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "raysweep-ray-token"


def test_cloud_cluster_up_hands_over_to_ray_up(capsys, tmp_path) -> None:
    aws = tmp_path / "aws.yaml"  # with a security group id for the shipped placeholder (test_cloud_perimeter)
    aws.write_text((REPO / "cluster" / "aws.yaml").read_text().replace("sg-YOUR-GROUP-ID", "sg-0123456789abcdef0"))
    assert main(["cluster", "up", str(aws), "--dry-run"]) == 0
    from raysweep.cluster import cloud

    assert capsys.readouterr().out.strip().endswith(f"ray up -y {cloud.cluster_dir('raysweep-aws') / 'launcher.yaml'}")


def test_a_launcher_config_is_a_profile_sized_by_its_node_types() -> None:
    from raysweep.config.profile import load_profile

    aws = load_profile(REPO / "cluster" / "aws.yaml")
    assert aws.name == "raysweep-aws" and aws.address == "auto" and aws.spans_hosts()
    assert aws.num_cpus == 0 and set(aws.node_types) == {"gpu_worker", "gpu_worker_on_demand"}
    # max_workers 10 in all: the 8 spot nodes and the 2 on-demand ones (4 trial drivers each).
    assert aws.max_capacity() == {"CPU": 40.0, "GPU": 10.0, "preemptible": 8.0, "trial_driver": 8.0}
    gcp = load_profile(REPO / "cluster" / "gcp.yaml")
    assert gcp.max_capacity() == {"CPU": 80.0, "GPU": 10.0, "preemptible": 8.0, "trial_driver": 8.0}
    # Both pin each trial's driver (and Train's controller) to the on-demand nodes.
    for profile in (aws, gcp):
        assert profile.trial_driver_resources == {"trial_driver": 1.0} and profile.driver_slots() == 8.0


def test_pinned_trial_drivers_make_sweeps_use_worker_groups_and_cap_concurrency() -> None:
    """On a profile that pins trial drivers, a one-worker trial is a Train worker group
    (its workers on any node, its driver on an on-demand one: Train's drain watcher
    moves the workers), never trained in the driver's own process."""
    from raysweep.config.profile import load_profile
    from raysweep.config.spec import ScalingSpec
    from raysweep.driver.plan import execution_mode
    from raysweep.worker.plan import ExecutionMode

    aws = load_profile(REPO / "cluster" / "aws.yaml")
    assert execution_mode(ScalingSpec(), aws.trial_driver_resources) is ExecutionMode.WORKER_GROUP
    assert execution_mode(ScalingSpec(), load_profile(None).trial_driver_resources) is ExecutionMode.IN_TRIAL


def test_check_refuses_a_cloud_profile_whose_on_demand_nodes_cannot_start(capsys, write_spec, tmp_path) -> None:
    """The global max_workers spent on the spot type (listed first) leaves no on-demand
    node for the trial drivers: `check --cluster` says so before anything starts."""
    aws = tmp_path / "aws.yaml"
    aws.write_text((REPO / "cluster" / "aws.yaml").read_text().replace("max_workers: 10 ", "max_workers: 8 "))
    spec = write_spec(scaling={"num_workers": 1, "cpus_per_worker": 2, "gpus_per_worker": 1})
    storage = ["--set", "storage_path=s3://bucket/runs"]
    assert main(["check", str(spec), "--cluster", str(REPO / "cluster" / "aws.yaml"), *storage]) == 0
    capsys.readouterr()
    assert main(["check", str(spec), "--cluster", str(aws), *storage]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"error: {aws}: trial drivers need {{trial_driver: 1}} (on-demand nodes)" in err, err


def test_check_against_a_cloud_profile_before_any_node_is_up(capsys, write_spec) -> None:
    """`raysweep check SPEC --cluster cluster/aws.yaml`: run storage must be shared, and
    a trial must fit the node types at their maximum counts; neither needs the cluster."""
    aws = str(REPO / "cluster" / "aws.yaml")
    spec = write_spec(scaling={"num_workers": 2, "cpus_per_worker": 2, "gpus_per_worker": 1})
    assert main(["check", str(spec), "--cluster", aws]) == 2
    assert "storage_path" in capsys.readouterr().err
    assert main(["check", str(spec), "--cluster", aws, "--set", "storage_path=s3://bucket/runs"]) == 0
    capsys.readouterr()
    too_big = ["--set", "storage_path=s3://bucket/runs", "--set", "scaling.num_workers=11"]
    assert main(["check", str(spec), "--cluster", aws, *too_big]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs 22 CPUs and 11 GPUs, but the cluster has 40 CPUs and 10 GPUs" in err, err
    assert "its node types at their maximum counts" in err
    # A worker runs on one node: 5 CPUs fit the node types' total, but no g5.xlarge (4 CPUs).
    one_node = ["--set", "storage_path=s3://bucket/runs", "--set", "scaling.cpus_per_worker=5"]
    assert main(["check", str(spec), "--cluster", aws, *one_node]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "scaling.cpus_per_worker/gpus_per_worker: one worker needs 5 CPUs" in err, err
    assert "gpu_worker 4 CPUs/1 GPUs" in err


def test_check_refuses_a_gpu_type_no_node_type_offers(capsys, write_spec, tmp_path) -> None:
    """scaling.accelerator_type against the node types' GPUs: aws.yaml's g5 nodes have
    A10G (the instance family), gcp.yaml's g2 nodes L4 (the machine family); a local
    profile's nodes offer what their `accelerator_type:X` resources say."""
    storage = ["--set", "storage_path=s3://bucket/runs"]
    spec = write_spec(scaling={"num_workers": 1, "cpus_per_worker": 2, "gpus_per_worker": 1})
    for profile, offered, other in (("aws", "A10G", "H100"), ("gcp", "L4", "A100")):
        path = str(REPO / "cluster" / f"{profile}.yaml")
        assert main(["check", str(spec), "--cluster", path, *storage, "--set",
                     f"scaling.accelerator_type={offered}"]) == 0
        capsys.readouterr()
        assert main(["check", str(spec), "--cluster", path, *storage, "--set",
                     f"scaling.accelerator_type={other}"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"scaling.accelerator_type: '{other}' is offered by no node" in err, err
        assert f"its GPU types: {offered}" in err
    local = tmp_path / "local.yaml"
    local.write_text("name: lab\nnum_cpus: 2\nworker_nodes:\n  - {num_cpus: 2, num_gpus: 1, "
                     "resources: {'accelerator_type:L4': 1}}\n")
    cpu_only = write_spec("cpu.yaml")
    assert main(["check", str(cpu_only), "--cluster", str(local), "--set", "scaling.accelerator_type=L4"]) == 0
    capsys.readouterr()
    assert main(["check", str(cpu_only), "--set", "scaling.accelerator_type=L4"]) == 2  # (the laptop: no GPU)
    assert "its GPU types: none" in capsys.readouterr().err


def test_a_gpu_type_is_asked_of_ray_in_every_execution_mode() -> None:
    from raysweep.worker.plan import Placement

    placement = Placement(cpus_per_worker=2, gpus_per_worker=1, accelerator_type="H100")
    assert placement.worker_resources() == {"CPU": 2, "GPU": 1, "accelerator_type:H100": 0.001}
    assert Placement().worker_resources() == {"CPU": 1.0}


def test_unreachable_address_fails_within_seconds(capsys, write_spec, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ray_was_up = ray.is_initialized()
    started = time.monotonic()
    assert main(["train", str(write_spec()), "--address", "127.0.0.1:9"]) == 2
    assert time.monotonic() - started < 10
    assert capsys.readouterr().err.startswith("raysweep: error: 127.0.0.1:9: no Ray cluster answers there")
    assert ray.is_initialized() == ray_was_up and not (tmp_path / "mlflow.db").exists()


def test_multi_host_profile_needs_shared_storage(capsys, write_spec, tmp_path) -> None:
    profile = tmp_path / "remote.yaml"
    profile.write_text("name: remote\naddress: head.example.invalid:6379\n")
    spec = write_spec(storage_path="results")
    assert main(["check", str(spec), "--cluster", str(profile)]) == 2
    err = capsys.readouterr().err
    assert "storage_path: 'results' is a local path that only this machine sees" in err
    assert main(["check", str(spec), "--cluster", str(profile), "--set", "storage_path=s3://bucket/runs"]) == 0
    profile.write_text(f"name: remote\naddress: head.example.invalid:6379\nshared_paths: [{tmp_path}]\n")
    assert main(["check", str(spec), "--cluster", str(profile), "--set", f"storage_path={tmp_path}/r"]) == 0


def test_upload_over_the_limit_names_the_largest_files(tmp_path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 5000)
    (tmp_path / "small.txt").write_text("hi")
    (tmp_path / "ignored.bin").write_bytes(b"x" * 9000)
    (tmp_path / ".rayignore").write_text("ignored.bin\n")
    with pytest.raises(UserInputError, match=r"over Ray's 0 MiB limit; largest: big.bin \(0.0 MiB\)"):
        check_upload(tmp_path, limit=1000)
    assert check_upload(tmp_path, limit=10_000) < 6000
