"""`raysweep submit SPEC --cluster PROFILE`: a sweep as a Ray job.

Wraps Ray's JobSubmissionClient: uploads the repo as the working dir (what
`.gitignore` and `.rayignore` exclude stays home), passes the environment the job
needs, follows the job's logs and exits with the job's outcome. The token sent is
the cluster's own (its file in the cluster's state folder; a RAY_AUTH_TOKEN the user
set wins) and is never printed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import time
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit

from ray.job_submission import JobStatus, JobSubmissionClient

from raysweep._upstream.cluster import use_token_auth, walk_upload
from raysweep.cluster import cloud
from raysweep.cluster.auth import token_env, token_file
from raysweep.cluster.local import ClusterState
from raysweep.cluster.secrets import SECRET_DIRS, SECRET_FILES, secret_file, secret_match  # noqa: F401  (re-exported)
from raysweep.config.profile import load_profile
from raysweep.errors import RunFailedError, UserInputError
from raysweep.tracking.store import tracking_uri

# Ray refuses working dirs above this (docs: runtime environments, working_dir).
UPLOAD_LIMIT_BYTES = 100 * 1024**2
# A job's env_vars are readable by everyone holding the cluster's token (`ray job list`,
# the dashboard): no credential is forwarded (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN,
# AWS_*, RAY_AUTH_TOKEN stay home; the cluster's nodes carry their own).
JOB_ENV_KEYS = ("RAY_TRAIN_V2_ENABLED", "MLFLOW_TRACKING_URI", "RAYSWEEP_BASE_DIR")
# Secret-looking names (`secrets`), kept home by the repo's .rayignore; `submit` refuses
# an upload that still holds one at any depth (an edited .rayignore, a `!` rule
# re-including one).
# Query (or fragment) parameters of a tracking URI that carry a credential.
_SECRET_PARAM = re.compile(r"token|passw|pwd|secret|api[-_]?key|access[-_]?key|signature|credential|^sig$|^auth",
                           re.IGNORECASE)


def upload_files(root: Path) -> list[tuple[Path, int]]:
    """The files Ray would upload from `root` (its own .gitignore/.rayignore rules)."""
    found: list[tuple[Path, int]] = []

    def handle(path: Path) -> None:
        if path.is_file():
            found.append((path, path.stat().st_size))

    walk_upload(root, handle)
    return found


def check_secrets(root: Path, files: list[tuple[Path, int]]) -> None:
    """UserInputError naming the first secret-looking files of an upload, if any."""
    found = sorted((path.relative_to(root).as_posix(), why) for path, _ in files
                   if (why := secret_file(path, path.relative_to(root))) is not None)
    if not found:
        return
    shown = ", ".join(f"{_printable(path)} ({why})" for path, why in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    raise UserInputError(
        f"{root}: the working dir upload would hold secret-looking file(s): {shown}{more}; add them to "
        f".rayignore or move them out of {root} (nothing was submitted)")


def check_upload(root: Path, limit: int = UPLOAD_LIMIT_BYTES) -> int:
    """Total upload size; UserInputError naming the first secret-looking files in it,
    or the largest files when over `limit`."""
    files = upload_files(root)
    check_secrets(root, files)
    total = sum(size for _, size in files)
    if total > limit:
        largest = sorted(files, key=lambda f: -f[1])[:3]
        names = ", ".join(f"{p.relative_to(root)} ({s / 2**20:.1f} MiB)" for p, s in largest)
        raise UserInputError(
            f"{root}: working dir would upload {total / 2**20:.1f} MiB, over Ray's "
            f"{limit / 2**20:.0f} MiB limit; largest: {names}; add them to .rayignore"
        )
    return total


def job_env(base_dir: Path, remote: bool = False) -> dict[str, str]:
    """The job's environment: Train V2, and where results and tracking go. No
    credentials: a tracking URI carrying one is refused (check_tracking_uri).

    A cluster on this machine (`remote=False`) shares its files: relative spec paths
    keep pointing at `base_dir` and the default tracking store is this folder's sqlite
    file. A cluster of other machines (a launcher profile) gets no path of this
    machine: relative paths resolve inside the job's working dir, and the tracking URI
    must be a server its nodes reach (check_remote_tracking_uri)."""
    keys = JOB_ENV_KEYS if not remote else tuple(k for k in JOB_ENV_KEYS if k != "RAYSWEEP_BASE_DIR")
    env = {k: os.environ[k] for k in keys if k in os.environ}
    env.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if not remote:
        env.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
        env.setdefault("RAYSWEEP_BASE_DIR", str(base_dir))
    elif "MLFLOW_TRACKING_URI" not in env:
        raise UserInputError(
            "MLFLOW_TRACKING_URI is not set, and the default (a sqlite file in this folder) is on this machine, "
            "which the cluster's nodes cannot read; set MLFLOW_TRACKING_URI to a tracking server they reach, "
            "e.g. http://mlflow.internal:5000 (nothing was submitted)")
    check_tracking_uri(env["MLFLOW_TRACKING_URI"])
    if remote:
        check_remote_tracking_uri(env["MLFLOW_TRACKING_URI"])
    return env


_LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def check_remote_tracking_uri(uri: str) -> None:
    """UserInputError for a tracking URI only this machine can use: a file or sqlite
    store (a path here), or a server on this machine's loopback (on a node, that
    address is the node itself)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme in ("", "file") or scheme.startswith("sqlite"):
        what = "a file on this machine"
    elif host in _LOOPBACK or host.startswith("127."):
        what = f"a server on this machine's loopback ({host}: on a node, that is the node itself)"
    else:
        return
    raise UserInputError(
        f"MLFLOW_TRACKING_URI {_printable(uri)}: {what}, which the cluster's nodes cannot reach; set "
        "MLFLOW_TRACKING_URI to a tracking server they reach, e.g. http://mlflow.internal:5000 "
        "(nothing was submitted)")


def in_upload(path: str, root: Path, what: str) -> str:
    """`path` as the job sees it: relative to the uploaded working dir `root`.
    UserInputError when it lies outside `root` (the job would not have it)."""
    resolved = (root / path).resolve() if not os.path.isabs(path) else Path(path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise UserInputError(
            f"{path}: the {what} is outside {root}, the working dir the job uploads, so the job would not have it; "
            "move it into that folder (nothing was submitted)")
    return resolved.relative_to(root.resolve()).as_posix()


def check_tracking_uri(uri: str) -> None:
    """UserInputError when the tracking URI a job gets carries a credential: a password
    (`user:password@`), a user name on an http(s) URI (basic auth: often a token), or a
    token/password query parameter. The message shows the URI with them redacted."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # not a URI MLflow could use either; show none of it
        if "@" in uri or _SECRET_PARAM.search(uri):
            raise UserInputError(_uri_refusal("(not shown: unparsable)", "what may be credentials", True)) from None
        return
    userinfo, at, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    web = parts.scheme.lower() in ("http", "https")
    found = []
    netloc = parts.netloc
    if password:
        found.append("a password in user:password@")
        netloc = f"{user}:***@{host}"
    elif at and web:
        found.append("a user name in user@, for basic auth often a token")
        netloc = f"***@{host}"
    query, query_found = _redact_params(parts.query)
    fragment, fragment_found = _redact_params(parts.fragment)
    found += [f"the parameter {name}=" for name in query_found + fragment_found]
    if found:
        shown = parts._replace(netloc=netloc, query=query, fragment=fragment).geturl()
        raise UserInputError(_uri_refusal(_printable(shown), " and ".join(found), web))


def _redact_params(text: str) -> tuple[str, list[str]]:
    """`k=v&...` with the values of credential-looking keys replaced by ***, and those keys."""
    kept, names = [], []
    for item in text.split("&") if text else []:
        key = item.partition("=")[0]
        if _SECRET_PARAM.search(unquote_plus(key)):
            names.append(_printable(unquote_plus(key)))
            item = f"{key}=***"
        kept.append(item)
    return "&".join(kept), names


def _uri_refusal(shown: str, what: str, web: bool) -> str:
    database = "" if web else " (a database store: its client's own password file, e.g. ~/.pgpass, on the nodes)"
    return (f"MLFLOW_TRACKING_URI {shown}: carries credentials ({what}), and a job's env vars are readable by "
            "everyone holding the cluster's token; take them out of the URI and set MLFLOW_TRACKING_USERNAME/"
            f"MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the cluster nodes' environment instead{database} "
            "(nothing was submitted)")


def _printable(text: str) -> str:
    """`text` itself, or its repr when it holds a newline or other unprintable character."""
    return text if text.isprintable() else repr(text)


def submit(dashboard: str, spec_path: str, overrides: list[str], root: Path,
           timeout_s: float | None = None, profile_path: str | None = None, remote: bool = False,
           resume: bool | str | None = None) -> int:
    """Submit `raysweep tune SPEC [--cluster PROFILE]` as a job, stream its logs,
    return its exit status. To a cluster of other machines (`remote`) the spec and the
    profile travel in the upload (their paths given relative to it). Refused before anything is sent: an upload holding
    a secret-looking file, a spec or profile outside it, a tracking URI carrying
    credentials, and for a cluster of other machines (`remote`) a tracking store only
    this machine reaches (see job_env)."""
    check_upload(root)
    env = job_env(root, remote=remote)
    # A cluster of other machines reads them from the upload; one on this machine (a
    # local profile) reads this machine's files too.
    def travel(path: str, what: str) -> str:
        return in_upload(path, root, what) if remote else path

    args = [travel(spec_path, "spec")]
    for item in overrides:
        args += ["--set", item]
    if profile_path:
        args += ["--cluster", travel(profile_path, "cluster profile")]
    if resume:
        args += ["--resume"] + ([resume] if isinstance(resume, str) else [])
    entrypoint = "python -m raysweep tune " + shlex.join(args)
    try:
        client = JobSubmissionClient(dashboard)
    except Exception as exc:
        raise RunFailedError(f"cannot reach the job API at {dashboard}: {_first_line(exc)}") from None
    job_id = _submit_with_retry(client, entrypoint, {"working_dir": str(root), "env_vars": env})
    print(f"submitted job {job_id} to {dashboard}: {entrypoint}", flush=True)
    asyncio.run(_follow(client, job_id))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not (status := client.get_job_status(job_id)).is_terminal():
        if deadline is not None and time.monotonic() > deadline:
            client.stop_job(job_id)
            raise RunFailedError(f"job {job_id} did not finish within {timeout_s:.0f} s; stopped it")
        time.sleep(1)
    info = client.get_job_info(job_id)
    print(f"job {job_id}: {status.value}", flush=True)
    if status == JobStatus.SUCCEEDED:
        return 0
    code = getattr(info, "driver_exit_code", None)
    return code if code in (1, 2) else 1


def _submit_with_retry(client, entrypoint: str, runtime_env: dict, wait_s: float = 60.0) -> str:
    """Right after `cluster up` the nodes' job agents may not have registered yet;
    Ray answers "No available agent to submit job, please try again later"."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise RunFailedError(f"job submission failed: {_first_line(exc)}") from None
            time.sleep(2)


async def _follow(client, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__



def submit_to_cluster(spec_path: str, overrides: list[str], profile_path: str, timeout_s: float | None,
                      resume: bool | str | None = None) -> int:
    """`raysweep submit SPEC --cluster PROFILE` to a cluster `raysweep cluster up` started."""
    if cloud.is_cloud_profile(profile_path):
        # A launcher config: the job API through `ray dashboard PROFILE`'s tunnel, and the
        # token file `raysweep cluster up` made for that cluster (RAY_AUTH_TOKEN would
        # outrank it). The job's driver runs on the head and joins it (`auto`); --cluster
        # tells it the node types the sweep sizes its concurrency by.
        dashboard, token = cloud.job_api(profile_path)
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
        use_token_auth()
        return submit(dashboard, spec_path, overrides, Path.cwd(), timeout_s, profile_path, remote=True,
                      resume=resume)
    profile = load_profile(profile_path)
    state = ClusterState.load(profile.name)
    if state is None:
        raise UserInputError(f"{profile_path}: cluster {profile.name!r} is not up (raysweep cluster up {profile_path})")
    # That cluster's own token (RAY_AUTH_TOKEN, set by the user, still wins).
    os.environ.update(token_env(token_file(profile.name)))
    use_token_auth()
    return submit(state.dashboard, spec_path, overrides, Path.cwd(), timeout_s, profile_path, resume=resume)
