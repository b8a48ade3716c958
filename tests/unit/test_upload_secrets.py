"""No secrets leave the machine with `raysweep submit`: the repo's .rayignore keeps
secret-looking files home, `submit` refuses an upload that would still hold one (an
edited .rayignore, a `!` rule), and a tracking URI carrying credentials; the job's env
forwards none. Real temporary folders walked with Ray's own upload rules; no Ray starts."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from raysweep.cli import main
from raysweep.cluster import submit as submit_module
from raysweep.cluster.submit import (
    JOB_ENV_KEYS,
    SECRET_DIRS,
    SECRET_FILES,
    check_tracking_uri,
    check_upload,
    job_env,
    secret_file,
    secret_match,
    submit,
    upload_files,
)
from raysweep.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]
RAYIGNORE = REPO / ".rayignore"
# One planted file per pattern (pattern -> the path planted, relative to the root).
PLANTED = {
    ".env": ".env",
    ".env.*": ".env.production",
    "*.pem": "certs/server.pem",
    "*.key": "tls.key",
    ".netrc": ".netrc",
    ".git-credentials": ".git-credentials",
    ".aws/": ".aws/credentials",
    ".config/gcloud/": ".config/gcloud/application_default_credentials.json",
    "credentials.json": "credentials.json",
    "*service-account*.json": "ops/my-service-account-key.json",
    "id_rsa*": "id_rsa",
    "id_ed25519*": "keys/id_ed25519.pub",
    "*.p12": "cert.p12",
    ".pgpass": ".pgpass",
    ".kube/": ".kube/config",
    "id_ecdsa*": "deploy/id_ecdsa",
    ".ssh/": ".ssh/known_hosts",
    ".envrc": ".envrc",
    "key.json": "deploy/key.json",
    ".databrickscfg": ".databrickscfg",
    ".npmrc": "web/.npmrc",
    ".pypirc": ".pypirc",
    "kubeconfig": "kubeconfig",
    "*.kubeconfig": "prod.kubeconfig",
    ".docker/": ".docker/config.json",
    ".huggingface/": ".huggingface/token",
    ".cache/huggingface/": "home/.cache/huggingface/token",
}
SECRET = "hunter2-Zq9"  # a password no message may show


def test_every_pattern_is_planted_and_in_the_repos_rayignore() -> None:
    assert set(PLANTED) == set(SECRET_FILES) | {f"{d}/" for d in SECRET_DIRS}
    lines = {line.strip() for line in RAYIGNORE.read_text().splitlines()}
    for pattern in SECRET_FILES:
        assert pattern in lines, pattern
    for folder in SECRET_DIRS:
        assert f"{folder}/" in lines or f"**/{folder}/" in lines, folder


def _tree(root: Path, planted: str, rayignore: str) -> Path:
    (root / "trainers").mkdir(parents=True)
    (root / "trainers" / "mine.py").write_text("def train(ctx):\n    pass\n")
    (root / ".rayignore").write_text(rayignore)
    path = root / planted
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"password={SECRET}\n")
    return path


def _uploaded(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p, _ in upload_files(root)}


def _without_secret_lines(text: str) -> str:
    """The repo's .rayignore as a user might have edited it: the secret block gone."""
    return text.split("# Secrets never leave the machine")[0]


@pytest.mark.parametrize("where", ["", "nested/deeper/"])
@pytest.mark.parametrize("pattern", list(PLANTED))
def test_the_repos_rayignore_keeps_each_secret_home(tmp_path, pattern, where) -> None:
    planted = where + PLANTED[pattern]
    _tree(tmp_path, planted, RAYIGNORE.read_text())
    uploaded = _uploaded(tmp_path)
    assert "trainers/mine.py" in uploaded and ".rayignore" in uploaded
    assert planted not in uploaded
    check_upload(tmp_path)  # nothing secret left: passes


@pytest.mark.parametrize("where", ["", "nested/deeper/"])
@pytest.mark.parametrize("pattern", list(PLANTED))
def test_an_upload_still_holding_a_secret_is_refused_naming_it(tmp_path, pattern, where) -> None:
    planted = where + PLANTED[pattern]
    _tree(tmp_path, planted, _without_secret_lines(RAYIGNORE.read_text()))
    assert planted in _uploaded(tmp_path)
    assert secret_match(PurePosixPath(planted)) == pattern
    with pytest.raises(UserInputError) as refused:
        check_upload(tmp_path)
    message = str(refused.value)
    assert "\n" not in message and SECRET not in message
    assert f"secret-looking file(s): {planted} (matches {pattern})" in message
    assert "add them to .rayignore or move them out of" in message


def test_a_bang_rule_re_including_a_secret_is_refused(tmp_path) -> None:
    _tree(tmp_path, ".env", RAYIGNORE.read_text() + "!.env\n")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / ".rayignore").write_text("!*.pem\n")  # a nested ignore file cannot re-include
    (tmp_path / "keys" / "server.pem").write_text("x")
    assert ".env" in _uploaded(tmp_path) and "keys/server.pem" not in _uploaded(tmp_path)
    with pytest.raises(UserInputError, match=r"secret-looking file\(s\): \.env \(matches \.env\);"):
        check_upload(tmp_path)


def test_names_match_case_insensitively_and_only_by_name(tmp_path) -> None:
    assert secret_match(PurePosixPath("deploy/ID_RSA")) == "id_rsa*"
    assert secret_match(PurePosixPath("a/.AWS/config")) == ".aws/"
    assert secret_match(PurePosixPath("x/.config/gcloud/legacy/c.db")) == ".config/gcloud/"
    for harmless in ("environment.py", "trainers/keys.py", "config/gcloud.yaml", ".config/other/x",
                     "docs/credentials.md", "aws/notes.txt", "key_metrics.csv"):
        assert secret_match(PurePosixPath(harmless)) is None, harmless


def test_the_message_names_the_first_three_sorted_and_counts_the_rest(tmp_path) -> None:
    _tree(tmp_path, "z.pem", "")
    for name in ("b.key", ".netrc", "a/id_rsa", ".kube/config"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    with pytest.raises(UserInputError) as refused:
        check_upload(tmp_path)
    assert ("secret-looking file(s): .kube/config (matches .kube/), .netrc (matches .netrc), "
            "a/id_rsa (matches id_rsa*) and 2 more;") in str(refused.value)


def test_the_repos_own_upload_holds_no_secret() -> None:
    files = upload_files(REPO)
    assert any(p.name == "submit.py" for p, _ in files), "the walk saw the repo"
    found = [p.relative_to(REPO).as_posix() for p, _ in files if secret_file(p, p.relative_to(REPO))]
    assert found == []  # (by name and by content: the tests below build their key text at run time)


def test_submit_refuses_a_secret_before_reaching_the_job_api(tmp_path, monkeypatch, capsys, write_spec) -> None:
    """Refused before anything is sent (the job client is never made); through the CLI,
    exit 2 and one line naming the file."""
    _tree(tmp_path, "ops/prod.env.key", "")

    def no_client(*args, **kwargs):
        raise AssertionError("the job API was contacted")

    monkeypatch.setattr(submit_module, "JobSubmissionClient", no_client)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with pytest.raises(UserInputError, match=r"ops/prod\.env\.key \(matches \*\.key\)"):
        submit("http://127.0.0.1:9", "spec.yaml", [], tmp_path)

    spec = write_spec()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submit_module, "submit_to_cluster",
                        lambda spec_path, overrides, profile, timeout, resume=None: submit(
                            "http://127.0.0.1:9", spec_path, overrides, Path.cwd(), timeout))
    capsys.readouterr()
    assert main(["submit", str(spec), "--cluster", str(REPO / "cluster" / "local.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("raysweep: error: ")
    assert "ops/prod.env.key (matches *.key)" in err and SECRET not in err


@pytest.mark.parametrize("uri, what", [
    (f"https://alice:{SECRET}@mlflow.example.com/", "a password in user:password@"),
    (f"https://alice:{SECRET.replace('-', '%40')}@mlflow.example.com:5000/x?y=1", "a password in user:password@"),
    (f"https://{SECRET}@mlflow.example.com", "a user name in user@"),
    (f"postgresql://ml:{SECRET}@db.internal:5432/mlflow", "a password in user:password@"),
    (f"https://mlflow.example.com/?token={SECRET}", "the parameter token="),
    (f"https://mlflow.example.com/api?x=1&Password={SECRET}", "the parameter Password="),
    (f"https://mlflow.example.com/#access_token={SECRET}", "the parameter access_token="),
])
def test_a_tracking_uri_with_credentials_is_refused_and_redacted(uri, what, monkeypatch, tmp_path) -> None:
    with pytest.raises(UserInputError) as refused:
        check_tracking_uri(uri)
    message = str(refused.value)
    assert message.startswith("MLFLOW_TRACKING_URI ") and what in message
    assert "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD" in message and "***" in message
    assert SECRET not in message and SECRET.replace("-", "%40") not in message and "\n" not in message

    # The same through submit: refused before the job API is contacted.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(submit_module, "JobSubmissionClient", lambda *a, **k: pytest.fail("contacted"))
    (tmp_path / "train.py").write_text("")
    with pytest.raises(UserInputError, match="^MLFLOW_TRACKING_URI ") as refused:
        submit("http://127.0.0.1:9", "spec.yaml", [], tmp_path)
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize("uri", [
    "http://127.0.0.1:5000", "https://mlflow.example.com/prefix?experiment=3", "databricks",
    "databricks://my-profile:prefix", "sqlite:////home/me@host/runs/mlflow.db", "file:///tmp/mlruns",
    "postgresql://ml@db.internal/mlflow",  # a user, the password from ~/.pgpass on the nodes
])
def test_a_clean_tracking_uri_passes(uri, monkeypatch, tmp_path) -> None:
    check_tracking_uri(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert job_env(tmp_path)["MLFLOW_TRACKING_URI"] == uri


def test_the_job_env_forwards_no_credentials(monkeypatch, tmp_path) -> None:
    """A job's env vars are readable by every holder of the cluster's token."""
    for key in JOB_ENV_KEYS:
        assert not any(word in key for word in ("PASSWORD", "USERNAME", "TOKEN", "SECRET", "KEY", "CREDENTIAL")), key
        assert not key.startswith(("AWS_", "GOOGLE_", "AZURE_")), key
    secrets = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": SECRET,
               "MLFLOW_TRACKING_TOKEN": SECRET + "t", "AWS_ACCESS_KEY_ID": "AKIA" + SECRET,
               "AWS_SECRET_ACCESS_KEY": SECRET + "a", "AWS_SESSION_TOKEN": SECRET + "s",
               "RAY_AUTH_TOKEN": SECRET + "r", "GOOGLE_APPLICATION_CREDENTIALS": "/home/me/sa.json"}
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    env = job_env(tmp_path)
    assert set(env) == {"RAY_TRAIN_V2_ENABLED", "MLFLOW_TRACKING_URI", "RAYSWEEP_BASE_DIR"}
    assert not set(env) & set(secrets)
    assert not any(SECRET in value or value == "alice" for value in env.values())


# Key text built here, not written out: the repo's own upload must hold none (above).
BEGIN_KEY = "-----BEGIN {}PRIVATE " + "KEY-----"
ACCOUNT = '{"type": "service_' + 'account", "private_key_id": "x"}'


@pytest.mark.parametrize(("name", "content", "why"), [
    ("deploy/prod.txt", BEGIN_KEY.format("OPENSSH ") + "\nb3Blbn...\n", "a private key"),
    ("config/settings.yaml", "tls: |\n  " + BEGIN_KEY.format("RSA ") + "\n", "a private key"),
    ("ops/my-project-1a2b3c.json", ACCOUNT, "a service-account key"),
])
def test_a_secret_under_a_harmless_name_is_refused_by_its_content(tmp_path, name, content, why) -> None:
    _tree(tmp_path, "README.md", RAYIGNORE.read_text())
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(content)
    assert secret_match(PurePosixPath(name)) is None
    with pytest.raises(UserInputError, match=rf"secret-looking file\(s\): {name} \(holds {why}\);"):
        check_upload(tmp_path)


def test_a_runs_git_diff_leaves_secret_files_out() -> None:
    """The diff attached to a run's MLflow record: a secret-looking file's section (by
    name or content) becomes one line saying it was left out; the rest stays whole."""
    from raysweep.cluster.secrets import scrub_diff

    code = "diff --git a/trainers/x.py b/trainers/x.py\n--- a/trainers/x.py\n+++ b/trainers/x.py\n@@ -1 +1 @@\n-a\n+b\n"
    env = f"diff --git a/.envrc b/.envrc\n--- a/.envrc\n+++ b/.envrc\n@@ -1 +1 @@\n+export TOKEN={SECRET}\n"
    key = ("diff --git a/notes/k.txt b/notes/k.txt\n+++ b/notes/k.txt\n@@ -0,0 +1 @@\n"
           f"+{BEGIN_KEY.format('')}{SECRET}\n")
    scrubbed = scrub_diff(code + env + key)
    assert SECRET not in scrubbed and scrubbed.startswith(code)
    assert "diff --git a/.envrc b/.envrc\n# (left out: matches .envrc)\n" in scrubbed
    assert "diff --git a/notes/k.txt b/notes/k.txt\n# (left out: holds a private key)\n" in scrubbed
    assert scrub_diff(code) == code and scrub_diff("") == ""
