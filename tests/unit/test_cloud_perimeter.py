"""Closed perimeters in the cloud profiles, and no secrets leaving the machine: the
shipped cluster/aws.yaml, gcp.yaml and kuberay.yaml as files, and what `raysweep
cluster up` refuses (one line naming the file and the field, exit 2) before it makes
a token or hands anything to `ray up`. No network, no `ray up`: HOME and
RAYSWEEP_STATE_DIR are temp dirs. What an upload leaves home, against the repo's
tracked files and a real rsync: tests/integration/test_upload_perimeter.py."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from raysweep.cli import main
from raysweep.cluster import cloud
from raysweep.config.profile import validate_launcher_config
from raysweep.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
PLACEHOLDER = "sg-YOUR-GROUP-ID"
GROUP = "sg-0123456789abcdef0"
LABEL = {"raysweep/ray-cluster": "raysweep-digits"}
SECRET_NAMES = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_?KEY", re.IGNORECASE)


def _shipped(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _aws(**changes) -> dict:
    """aws.yaml as a user sets it up (a group id for the placeholder)."""
    raw = yaml.safe_load((CLUSTER / "aws.yaml").read_text().replace(PLACEHOLDER, GROUP))
    raw.update(changes)
    return raw


def _write(raw: dict, folder: Path, name: str = "profile.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _refused(path: Path, field: str, capsys) -> str:
    """`raysweep cluster up PATH` exits 2 with one line naming the file and the field,
    and makes no token; returns that line."""
    token = cloud.cluster_dir(yaml.safe_load(path.read_text())["cluster_name"]) / "auth_token"
    had_token = token.exists()
    with pytest.raises(UserInputError, match=rf"^{re.escape(str(path))}: {re.escape(field)}: "):
        cloud.launcher_command("up", str(path))
    assert main(["cluster", "up", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"raysweep: error: {path}: {field}: "), err
    assert token.exists() == had_token, "refused before any token is made"
    return err


def _ray_source(relative: str) -> str:
    """A file of the installed Ray (its AWS/GCP providers need boto3/google libraries
    this venv lacks, so they are read, not imported)."""
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations
    return (Path(spec.submodule_search_locations[0]) / relative).read_text()


def _commands(name: str) -> str:
    """The shell commands a profile's comments give (comment lines indented by 3),
    continuation lines joined, runs of blanks as one."""
    lines = [line[4:] for line in (CLUSTER / name).read_text().splitlines() if line.startswith("#   ")]
    return re.sub(r"\s+", " ", "\n".join(lines).replace("\\\n", " "))


# ---- AWS: one security group the user makes, SSH from the user's address only ----


def test_rays_aws_provider_opens_ssh_to_everyone_unless_every_node_names_its_groups() -> None:
    """The premise of the AWS check (Ray 2.60): a group Ray makes gets an SSH rule open
    to 0.0.0.0/0 whatever provider.security_group.IpPermissions adds; node types that
    name SecurityGroupIds get no group and no rule from Ray."""
    source = _ray_source("autoscaler/_private/aws/config.py")
    ssh = source[source.index("def _create_default_ssh_inbound_rules"):]
    assert '"IpRanges": [{"CidrIp": "0.0.0.0/0"}]' in ssh[:400]
    merged = source[source.index("def _create_default_inbound_rules"):source.index("def _create_default_intracluster")]
    assert "ssh_rules" in merged and "extended_rules" in merged
    assert 'if "SecurityGroupIds" not in node_type["node_config"]' in source
    assert "return config  # have user-defined groups" in source


def test_shipped_aws_profile_names_one_group_for_every_node_type_and_no_open_rule(state, capsys) -> None:
    raw = _shipped("aws.yaml")
    validate_launcher_config(raw, "aws.yaml")
    for name, node_type in raw["available_node_types"].items():
        assert node_type["node_config"]["SecurityGroupIds"] == [PLACEHOLDER], name
    assert "security_group" not in raw["provider"]
    assert "0.0.0.0/0" not in yaml.safe_dump(raw) and "::/0" not in yaml.safe_dump(raw)
    commands = _commands("aws.yaml")
    assert '--protocol tcp --port 22 --cidr "$SSH_CIDR"' in commands  # SSH from the user's CIDR only
    assert '--protocol -1 --source-group "$SG"' in commands  # the nodes among themselves
    assert "0.0.0.0/0" not in commands and "::/0" not in commands
    # Shipped, it is refused until the placeholder is the user's group id.
    _refused(CLUSTER / "aws.yaml", "available_node_types.head.node_config.SecurityGroupIds", capsys)


def test_aws_profile_with_a_group_id_passes_and_keeps_it(state, tmp_path) -> None:
    command = cloud.launcher_command("up", str(_write(_aws(), tmp_path)))
    config = yaml.safe_load(Path(command[-1]).read_text())
    validate_launcher_config(config, command[-1])
    assert {t["node_config"]["SecurityGroupIds"][0] for t in config["available_node_types"].values()} == {GROUP}


@pytest.mark.parametrize("ranges,key,cidr", [("IpRanges", "CidrIp", "0.0.0.0/0"),
                                             ("Ipv6Ranges", "CidrIpv6", "::/0"),
                                             ("IpRanges", "CidrIp", "10.1.2.3/0")])
def test_aws_rule_open_to_every_address_is_refused(state, tmp_path, capsys, ranges, key, cidr) -> None:
    mine = {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "203.0.113.7/32"}]}
    open_rule = {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp",
                 ranges: [{key: "198.51.100.0/24"}, {key: cidr}]}
    raw = _aws()
    raw["provider"]["security_group"] = {"GroupName": "raysweep", "IpPermissions": [mine, open_rule]}
    err = _refused(_write(raw, tmp_path), f"provider.security_group.IpPermissions[1].{ranges}[1].{key}", capsys)
    assert f"'{cidr}' lets every address in" in err
    raw["provider"]["security_group"]["IpPermissions"] = [mine]
    cloud.launcher_command("up", str(_write(raw, tmp_path)))  # the user's own address only: fine


@pytest.mark.parametrize("groups,message", [(None, "missing: without it Ray makes a security group"),
                                            ([], "missing: without it Ray makes a security group"),
                                            ([PLACEHOLDER], "'sg-YOUR-GROUP-ID' is not a security group id"),
                                            (["default"], "'default' is not a security group id")])
def test_aws_node_type_without_its_own_group_is_refused(state, tmp_path, capsys, groups, message) -> None:
    raw = _aws()
    node_config = raw["available_node_types"]["gpu_worker"]["node_config"]
    node_config.pop("SecurityGroupIds")
    if groups is not None:
        node_config["SecurityGroupIds"] = groups
    err = _refused(_write(raw, tmp_path), "available_node_types.gpu_worker.node_config.SecurityGroupIds", capsys)
    assert message in err and "cluster/aws.yaml" in err


def test_down_and_status_are_not_refused_so_an_older_cluster_can_be_torn_down(state, tmp_path) -> None:
    raw = _aws()
    for node_type in raw["available_node_types"].values():
        node_type["node_config"].pop("SecurityGroupIds")
    profile = _write(raw, tmp_path)
    with pytest.raises(UserInputError, match="SecurityGroupIds: missing"):
        cloud.launcher_command("up", str(profile))
    generated = cloud.cluster_dir("raysweep-aws") / "launcher.yaml"
    for action in ("down", "status"):
        assert str(generated) in cloud.launcher_command(action, str(profile))
        assert set(cloud.SECRET_EXCLUDES) <= set(yaml.safe_load(generated.read_text())["rsync_exclude"])


def test_aws_groups_named_on_network_interfaces_count(state, tmp_path, capsys) -> None:
    raw = _aws()
    node_config = raw["available_node_types"]["gpu_worker"]["node_config"]
    node_config.pop("SecurityGroupIds")
    node_config["NetworkInterfaces"] = [{"DeviceIndex": 0, "SubnetId": "subnet-0123456789abcdef0", "Groups": [GROUP]}]
    cloud.launcher_command("up", str(_write(raw, tmp_path)))
    del node_config["NetworkInterfaces"][0]["Groups"]
    _refused(_write(raw, tmp_path), "available_node_types.gpu_worker.node_config.NetworkInterfaces[0].Groups", capsys)


# ---- GCP: a network of its own, never `default` ----


def test_rays_gcp_provider_picks_a_subnetwork_only_for_nodes_that_name_none() -> None:
    """The premise of the GCP check (Ray 2.60): nodes without networkInterfaces land on
    the region's first subnetwork; Ray makes no firewall rule."""
    source = _ray_source("autoscaler/_private/gcp/config.py")
    assert '"networkInterfaces" in node_config or "networkConfig" in node_config' in source
    assert "default_subnet = subnets[0]" in source
    assert "firewalls()" not in source


def test_shipped_gcp_profile_uses_a_network_of_its_own(state) -> None:
    raw = _shipped("gcp.yaml")
    validate_launcher_config(raw, "gcp.yaml")
    for name, node_type in raw["available_node_types"].items():
        node_config = node_type["node_config"]
        (interface,) = node_config["networkInterfaces"]
        assert interface["network"] == "global/networks/raysweep", name
        assert interface["subnetwork"] == "regions/us-west1/subnetworks/raysweep-us-west1", name
        assert node_config["tags"] == {"items": ["raysweep"]}, name  # what the firewall rules apply to
    assert "default" not in yaml.safe_dump(raw["available_node_types"])
    commands = _commands("gcp.yaml")
    for made in ("networks create raysweep --project=PROJECT --subnet-mode=custom",
                 "subnets create raysweep-us-west1 --project=PROJECT --network=raysweep --region=us-west1",
                 '--rules=tcp:22 --source-ranges="$SSH_CIDR" --target-tags=raysweep',
                 "--rules=tcp,udp,icmp --source-tags=raysweep --target-tags=raysweep"):
        assert made in commands, made
    assert "0.0.0.0/0" not in commands and "--network=default" not in commands
    command = cloud.launcher_command("up", str(CLUSTER / "gcp.yaml"))  # goes as shipped
    validate_launcher_config(yaml.safe_load(Path(command[-1]).read_text()), command[-1])


@pytest.mark.parametrize("change,field,message", [
    (lambda c: c.pop("networkInterfaces"), "networkInterfaces", "missing: Ray would put the node"),
    (lambda c: c.update(networkInterfaces=[]), "networkInterfaces", "missing: Ray would put the node"),
    (lambda c: c.update(networkInterfaces=[{"accessConfigs": [{"type": "ONE_TO_ONE_NAT"}]}]),
     "networkInterfaces[0]", "names no network or subnetwork, so GCP uses the `default` network"),
    (lambda c: c.update(networkInterfaces=[{"network": "global/networks/default"}]),
     "networkInterfaces[0].network", "'global/networks/default' is the `default` network's"),
    (lambda c: c.update(networkInterfaces=[{"network": "projects/p/global/networks/raysweep",
                                            "subnetwork": "regions/us-west1/subnetworks/default"}]),
     "networkInterfaces[0].subnetwork", "'regions/us-west1/subnetworks/default' is the `default` network's"),
    (lambda c: c.update(networkInterfaces=[{"network": "default"}]), "networkInterfaces[0].network", "'default'"),
])
def test_gcp_node_type_on_the_default_network_is_refused(state, tmp_path, capsys, change, field, message) -> None:
    raw = _shipped("gcp.yaml")
    change(raw["available_node_types"]["gpu_worker"]["node_config"])
    err = _refused(_write(raw, tmp_path), f"available_node_types.gpu_worker.node_config.{field}", capsys)
    assert message in err, err


# ---- KubeRay: NetworkPolicy, dashboard not on 0.0.0.0, token only from the Secret ----


def _kuberay() -> tuple[dict, list[dict]]:
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()))
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    return job, [d for d in docs if d["kind"] == "NetworkPolicy"]


def _pods(job: dict) -> dict[str, dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return {"head": cluster["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]},
            "submitter": job["spec"]["submitterPodTemplate"]}


def test_kuberay_policies_let_in_only_the_clusters_own_pods_and_the_operator() -> None:
    text = (CLUSTER / "kuberay.yaml").read_text()
    job, policies = _kuberay()
    kinds = [d["kind"] for d in yaml.safe_load_all(text)]
    assert kinds == ["NetworkPolicy", "NetworkPolicy", "RayJob"]  # applied before any Ray pod starts
    for name, pod in _pods(job).items():
        assert pod["metadata"]["labels"] == LABEL, name
    by_name = {p["metadata"]["name"]: p["spec"] for p in policies}
    same = by_name["raysweep-digits-same-cluster"]
    assert same["podSelector"] == {"matchLabels": LABEL} and same["policyTypes"] == ["Ingress"]
    assert same["ingress"] == [{"from": [{"podSelector": {"matchLabels": LABEL}}]}]  # same namespace, same label
    operator = by_name["raysweep-digits-operator"]
    assert operator["podSelector"] == {"matchLabels": {**LABEL, "ray.io/node-type": "head"}}
    (rule,) = operator["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8265}]  # the job API only
    assert rule["from"] == [{"namespaceSelector": {}, "podSelector": {"matchLabels":
                                                                       {"app.kubernetes.io/name": "kuberay-operator"}}}]
    for spec in by_name.values():
        assert "Ingress" in spec["policyTypes"]
        for rule in spec["ingress"]:
            assert rule.get("from"), "a rule without `from` lets everyone in"
            assert all("ipBlock" not in peer for peer in rule["from"])


def test_kuberay_dashboard_binds_to_the_pod_ip_not_every_address() -> None:
    job, _ = _kuberay()
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    host = head["rayStartParams"]["dashboard-host"]
    assert host == "$RAYSWEEP_POD_IP" and host not in ("0.0.0.0", "::", "")
    assert "0.0.0.0" not in yaml.safe_dump(job)
    (container,) = head["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["RAYSWEEP_POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")


def test_kuberay_token_is_on_no_command_line_and_in_no_inline_value() -> None:
    job, _ = _kuberay()
    for name, pod in _pods(job).items():
        for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            line = " ".join(map(str, container.get("command", []) + container.get("args", [])))
            assert not re.search(r"TOKEN|auth_token|raysweep-ray-token", line, re.IGNORECASE), (name, line)
            for var in container.get("env", []):
                if SECRET_NAMES.search(var["name"]):
                    assert "value" not in var and "secretKeyRef" in var["valueFrom"], (name, var["name"])
            for source in container.get("envFrom", []):
                assert "configMapRef" not in source, (name, "a ConfigMap is no place for a secret")
    everywhere = job["spec"]["entrypoint"] + " " + yaml.safe_dump(job["spec"]["rayClusterSpec"]["headGroupSpec"]
                                                                   ["rayStartParams"])
    assert not re.search(r"TOKEN|auth_token", everywhere, re.IGNORECASE)
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert not [k for k in runtime_env.get("env_vars", {}) if SECRET_NAMES.search(k)]


# ---- Launcher profiles: no token on a command line, no secrets in the upload ----


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_profiles_put_no_token_value_on_a_command_line(name) -> None:
    raw = _shipped(name)
    keys = [k for k in raw if k.endswith("_commands")]
    lines = [c for k in keys for c in raw[k] or []]
    assert lines and not [c for c in lines if re.search(r"RAY_AUTH_TOKEN=|get-auth-token", c)]


def test_launcher_copy_carries_the_secret_excludes_the_profile_lacks(state, tmp_path) -> None:
    raw = _aws(rsync_exclude=[".git", "*.pem"])
    command = cloud.launcher_command("up", str(_write(raw, tmp_path)))
    config = yaml.safe_load(Path(command[-1]).read_text())
    assert config["rsync_exclude"][:2] == [".git", "*.pem"]
    assert set(cloud.SECRET_EXCLUDES) <= set(config["rsync_exclude"])
    assert len(config["rsync_exclude"]) == len(set(config["rsync_exclude"]))
    raw.pop("rsync_exclude")
    command = cloud.launcher_command("up", str(_write(raw, tmp_path)))
    assert yaml.safe_load(Path(command[-1]).read_text())["rsync_exclude"] == list(cloud.SECRET_EXCLUDES)


@pytest.mark.parametrize("source,pattern", [("~/.aws/credentials", ".aws/"), ("~/.ssh/id_ed25519", "id_ed25519*"),
                                            ("./.env", ".env"), ("/etc/tls/site.key", "*.key"),
                                            ("~/.config/gcloud", ".config/gcloud/")])
def test_file_mount_of_a_secret_is_refused(state, tmp_path, capsys, source, pattern) -> None:
    raw = _aws()
    raw["file_mounts"]["~/creds"] = source
    err = _refused(_write(raw, tmp_path), "file_mounts['~/creds']", capsys)
    assert f"{source!r} matches {pattern!r}" in err
