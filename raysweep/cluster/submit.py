"""`raysweep submit SPEC --cluster PROFILE`: a sweep as a Ray job.

Wraps Ray's JobSubmissionClient: uploads the repo as the working dir (what
`.gitignore` and `.rayignore` exclude stays home), passes the environment the job
needs, follows the job's logs and exits with the job's outcome. The token is sent
the way Ray's client sends it (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token) and is never printed.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from raysweep._ray_compat import use_token_auth, walk_upload
from raysweep.cluster import cloud
from raysweep.cluster.local import ClusterState
from raysweep.config.profile import load_profile
from raysweep.errors import RunFailedError, UserInputError
from raysweep.tracking.store import tracking_uri

# Ray refuses working dirs above this (docs: runtime environments, working_dir).
UPLOAD_LIMIT_BYTES = 100 * 1024**2
JOB_ENV_KEYS = ("RAY_TRAIN_V2_ENABLED", "MLFLOW_TRACKING_URI", "RAYSWEEP_BASE_DIR")


def upload_files(root: Path) -> list[tuple[Path, int]]:
    """The files Ray would upload from `root` (its own .gitignore/.rayignore rules)."""
    found: list[tuple[Path, int]] = []

    def handle(path: Path) -> None:
        if path.is_file():
            found.append((path, path.stat().st_size))

    walk_upload(root, handle)
    return found


def check_upload(root: Path, limit: int = UPLOAD_LIMIT_BYTES) -> int:
    """Total upload size; UserInputError naming the largest files when over `limit`."""
    files = upload_files(root)
    total = sum(size for _, size in files)
    if total > limit:
        largest = sorted(files, key=lambda f: -f[1])[:3]
        names = ", ".join(f"{p.relative_to(root)} ({s / 2**20:.1f} MiB)" for p, s in largest)
        raise UserInputError(
            f"{root}: working dir would upload {total / 2**20:.1f} MiB, over Ray's "
            f"{limit / 2**20:.0f} MiB limit; largest: {names}; add them to .rayignore"
        )
    return total


def job_env(base_dir: Path) -> dict[str, str]:
    """The job's environment: Train V2, and absolute places for results and data."""
    env = {k: os.environ[k] for k in JOB_ENV_KEYS if k in os.environ}
    env.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    env.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    env.setdefault("RAYSWEEP_BASE_DIR", str(base_dir))
    return env


def submit(dashboard: str, spec_path: str, overrides: list[str], root: Path,
           timeout_s: float | None = None, profile_path: str | None = None) -> int:
    """Submit `raysweep tune SPEC [--cluster PROFILE]` as a job, stream its logs,
    return its exit status."""
    check_upload(root)
    args = [spec_path]
    for item in overrides:
        args += ["--set", item]
    if profile_path:
        args += ["--cluster", profile_path]
    entrypoint = "python -m raysweep tune " + shlex.join(args)
    try:
        client = JobSubmissionClient(dashboard)
    except Exception as exc:
        raise RunFailedError(f"cannot reach the job API at {dashboard}: {_first_line(exc)}") from None
    job_id = _submit_with_retry(client, entrypoint, {"working_dir": str(root), "env_vars": job_env(root)})
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



def submit_to_cluster(spec_path: str, overrides: list[str], profile_path: str, timeout_s: float | None) -> int:
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
        return submit(dashboard, spec_path, overrides, Path.cwd(), timeout_s, profile_path)
    profile = load_profile(profile_path)
    state = ClusterState.load(profile.name)
    if state is None:
        raise UserInputError(f"{profile_path}: cluster {profile.name!r} is not up (raysweep cluster up {profile_path})")
    use_token_auth()
    return submit(state.dashboard, spec_path, overrides, Path.cwd(), timeout_s, profile_path)
