"""The cluster token on every cloud node: the launcher config `raysweep cluster up`
hands to `ray up` (checked with Ray's own validation, never launched), the token
file it makes, `raysweep submit` to a cloud cluster, and the KubeRay manifest.
No network, no `ray up`: HOME and RAYSWEEP_STATE_DIR are temp dirs."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import yaml

from raysweep.cli import main
from raysweep.cluster import cloud
from raysweep.cluster import submit as submit_module
from raysweep.config.profile import validate_launcher_config
from raysweep.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]
CLOUD = ["aws.yaml", "gcp.yaml"]
SECRET = "raysweep-ray-token"
GROUP = "sg-0123456789abcdef0"


def _configured(name: str, folder: Path) -> Path:
    """A shipped profile as its user sets it up: `up` refuses aws.yaml until its
    placeholder security group is a group id (test_cloud_perimeter); gcp.yaml goes as is."""
    shipped = REPO / "cluster" / name
    if name != "aws.yaml":
        return shipped
    copy = folder / name
    copy.write_text(shipped.read_text().replace("sg-YOUR-GROUP-ID", GROUP))
    return copy


def _up(profile: Path | str) -> tuple[list[str], dict, str]:
    """The `ray up` command, the config it names (parsed) and that config's text."""
    command = cloud.launcher_command("up", str(profile))
    text = Path(command[-1]).read_text()
    return command, yaml.safe_load(text), text


def _start_commands(config: dict, node_type: str) -> list[str]:
    """The `ray start` commands a node of `node_type` runs (head's or workers')."""
    key = "head_start_ray_commands" if node_type == config["head_node_type"] else "worker_start_ray_commands"
    return [c for c in config[key] if "ray start" in c]


@pytest.mark.parametrize("name", CLOUD)
def test_generated_config_passes_rays_validation_and_every_node_type_gets_the_token(state, tmp_path, name) -> None:
    command, config, _ = _up(_configured(name, tmp_path))
    generated = Path(command[-1])
    assert command[-3:-1] == ["up", "-y"] and generated.is_relative_to(state)
    validate_launcher_config(config, generated)  # prepare_config + validate_config, as `ray up`
    token = cloud.token_file(config["cluster_name"])
    assert config["file_mounts"][cloud.REMOTE_TOKEN_PATH] == str(token)
    assert config["file_mounts"]["~/raysweep"] == "."  # the repo still goes too
    remote_paths = set()
    for node_type in config["available_node_types"]:
        starts = _start_commands(config, node_type)
        assert starts, node_type
        for command_line in starts:
            assert "RAY_AUTH_MODE=token" in command_line and cloud.TOKEN_ENV in command_line, node_type
            (path,) = re.findall(r"RAY_AUTH_TOKEN_PATH=(\S+)", command_line)
            remote_paths.add(path.replace("$HOME", "~", 1))
    assert remote_paths == {cloud.REMOTE_TOKEN_PATH}  # the env names where file_mounts puts it
    assert f"chmod 600 {cloud.REMOTE_TOKEN_PATH}" in " ".join(config["setup_commands"])
    assert "get-auth-token" not in yaml.safe_dump(config) and ".ray/auth_token" not in yaml.safe_dump(config)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


@pytest.mark.parametrize("name", CLOUD)
def test_shipped_config_mounts_the_token_where_its_commands_read_it(name) -> None:
    raw = yaml.safe_load((REPO / "cluster" / name).read_text())
    validate_launcher_config(raw, name)
    assert cloud.REMOTE_TOKEN_PATH in raw["file_mounts"]
    assert not raw["head_setup_commands"], "no head-only token step: every node gets the same token"
    for key in cloud.START_COMMANDS:
        assert all(cloud.TOKEN_ENV in c for c in raw[key] if "ray start" in c), key


def test_token_file_is_private_made_once_per_cluster_name(state, tmp_path) -> None:
    aws = _configured("aws.yaml", tmp_path)
    _, config, _ = _up(aws)
    token = cloud.token_file(config["cluster_name"])
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    first = token.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", first)  # as `ray get-auth-token --generate` makes one
    _up(aws)
    assert token.read_text() == first and stat.S_IMODE(token.stat().st_mode) == 0o600

    other = tmp_path / "other.yaml"
    raw = yaml.safe_load(aws.read_text())
    raw["cluster_name"] = "raysweep-aws-2"
    other.write_text(yaml.safe_dump(raw))
    _, other_config, _ = _up(other)
    other_token = cloud.token_file("raysweep-aws-2")
    assert other_config["file_mounts"][cloud.REMOTE_TOKEN_PATH] == str(other_token)
    assert other_token.read_text() != first
    _, gcp_config, _ = _up(REPO / "cluster" / "gcp.yaml")
    assert cloud.token_file(gcp_config["cluster_name"]).read_text() not in (first, other_token.read_text())
    temporary_home = state.parent / "home"  # (the fixture's HOME)
    assert not (temporary_home / ".ray").exists(), "Ray's own auth_token file is never made or used"


def test_token_value_is_in_no_config_and_no_printed_command(state, tmp_path, capsys) -> None:
    aws = _configured("aws.yaml", tmp_path)
    assert main(["cluster", "up", str(aws), "--dry-run"]) == 0
    out = capsys.readouterr().out
    _, config, text = _up(aws)
    generated = cloud.cluster_dir(config["cluster_name"]) / "launcher.yaml"
    assert out.strip().endswith(f"ray up -y {generated}")  # the dry run shows the copy `ray up` gets
    token = cloud.token_file(config["cluster_name"]).read_text()
    assert token not in out and token not in text
    for action in ("down", "status"):
        command = cloud.launcher_command(action, str(aws))
        assert str(generated) in command and token not in " ".join(command)
    status = cloud.launcher_command("status", str(aws))[-1]
    assert "RAY_AUTH_MODE=token" in status and cloud.TOKEN_ENV in status and status.endswith("ray status")


@pytest.mark.parametrize("key", cloud.START_COMMANDS)
def test_start_commands_without_the_token_are_refused(state, tmp_path, key) -> None:
    raw = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    raw[key] = [c.replace(cloud.TOKEN_ENV + " ", "") for c in raw[key]]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserInputError, match=rf"^{re.escape(str(bad))}: {key}: .*carry the cluster token"):
        cloud.launcher_command("up", str(bad))
    assert not cloud.token_file("raysweep-aws").exists()


def test_cluster_name_that_is_no_file_name_is_refused(state, tmp_path) -> None:
    raw = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    raw["cluster_name"] = "../escape"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserInputError, match=r"cluster_name: '\.\./escape'"):
        cloud.launcher_command("up", str(bad))
    assert not (tmp_path / "escape").exists()


def test_submit_to_a_cloud_cluster_sends_that_clusters_token(state, tmp_path, monkeypatch) -> None:
    aws = str(_configured("aws.yaml", tmp_path))
    for key, value in {"RAY_AUTH_TOKEN": "a-stale-token", "RAY_AUTH_TOKEN_PATH": "/elsewhere",
                       "RAY_AUTH_MODE": "token", "RAY_ADDRESS": ""}.items():
        monkeypatch.setenv(key, value)  # (restored after the test)
    with pytest.raises(UserInputError, match=r"has no token .*raysweep cluster up"):
        submit_module.submit_to_cluster("spec.yaml", [], aws, None)
    cloud.launcher_command("up", aws)
    seen: dict = {}

    def fake_submit(dashboard, spec_path, overrides, root, timeout_s=None, profile_path=None, remote=False,
                    resume=None) -> int:
        import os

        seen.update(dashboard=dashboard, profile_path=profile_path, token_path=os.environ.get("RAY_AUTH_TOKEN_PATH"),
                    token=os.environ.get("RAY_AUTH_TOKEN"), remote=remote)
        return 0

    monkeypatch.setattr(submit_module, "submit", fake_submit)
    monkeypatch.setattr(submit_module, "use_token_auth", lambda: None)
    assert submit_module.submit_to_cluster("spec.yaml", [], aws, None) == 0
    assert seen == {"dashboard": cloud.JOB_API, "profile_path": aws,  # the head-side tune sizes by it
                    "token_path": str(cloud.token_file("raysweep-aws")), "token": None,
                    "remote": True}  # (no laptop path or laptop-only tracking store goes)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:18265")
    submit_module.submit_to_cluster("spec.yaml", [], aws, None)
    assert seen["dashboard"] == "http://127.0.0.1:18265"


def test_kuberay_every_container_gets_the_token_from_the_secret() -> None:
    text = (REPO / "cluster" / "kuberay.yaml").read_text()
    (job,) = [doc for doc in yaml.safe_load_all(text) if doc["kind"] == "RayJob"]  # (after its NetworkPolicies)
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": SECRET}
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"]),
            job["spec"]["submitterPodTemplate"]]
    for pod in pods:
        for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
            token = env["RAY_AUTH_TOKEN"]
            assert "value" not in token, container["name"]
            assert token["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "auth_token"}, container["name"]
            assert "RAY_AUTH_TOKEN" not in " ".join(map(str, container.get("command", []) + container.get("args", [])))
    assert not re.search(r"\b[0-9a-f]{32,}\b", text), "no token literal"
    assert "--from-literal" not in text and "get-auth-token" not in text
    head = cluster["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")
    assert head["rayStartParams"]["dashboard-host"] == "$RAYSWEEP_POD_IP"  # the pod's IP (test_cloud_perimeter)


def test_up_of_machines_you_own_sets_every_machine_up_again(state, tmp_path, monkeypatch) -> None:
    """Ray skips the setup (the token's file mount included) of a machine its tags call
    set up: a reinstalled head would start without the token."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    onprem = REPO / "cluster" / "onprem.yaml"
    stored = tmp_path / "raytmp" / "ray" / "cluster-raysweep-onprem.state"
    stored.parent.mkdir(parents=True)
    stored.write_text('{"10.0.0.10": {"tags": {"ray-runtime-config": "x"}, "state": "running"}}')
    assert cloud.forget_set_up_machines(str(onprem)) == stored and not stored.exists()
    assert cloud.forget_set_up_machines(str(onprem)) is None  # (nothing stored: nothing to do)
    assert cloud.forget_set_up_machines(str(_configured("aws.yaml", tmp_path))) is None  # (a cloud's nodes: not ours)


def test_onprem_profile_validates_and_every_machine_gets_the_token(state) -> None:
    """cluster/onprem.yaml (Ray's `local` provider) goes through the same checks as the
    cloud profiles; tests/cluster/test_shared_nothing.py runs it on hosts for real."""
    command, config, _ = _up(REPO / "cluster" / "onprem.yaml")
    validate_launcher_config(config, Path(command[-1]))
    assert config["provider"]["type"] == "local"
    assert config["file_mounts"][cloud.REMOTE_TOKEN_PATH] == str(cloud.token_file(config["cluster_name"]))
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c and cloud.TOKEN_ENV in c for c in starts), key
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "--num-cpus=0" in head
    assert "RAY_enable_autoscaler_v2=0" in head  # (v2 starts one worker of a local provider only)
    assert all(p in config["rsync_exclude"] for p in cloud.SECRET_EXCLUDES)
