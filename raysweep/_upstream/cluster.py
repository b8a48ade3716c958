"""Ray Core and launcher internals a cluster's setup needs: the token a process sends
(Ray's auth mode is read once into the Cython `ray._raylet.Config`), a one-request
probe of whether a GCS refuses it, a new token as `ray get-auth-token --generate`
makes it, the "current cluster" file Ray's own actors read, the files a job upload
takes (Ray's .gitignore/.rayignore walk), the `local` provider's state file, the
launcher's schema check, and the switch that keeps an in-process cluster on loopback.

Why private: Ray has no public call for any of these (its CLI does them inside its own
commands). Recheck on an upgrade: that each still exists with the same arguments and
meaning; `tests/integration/test_cluster*.py` and `tests/cluster/` exercise them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from raysweep._upstream import Pin

CHECKED = ("2.60.0", "2.61.0")
PINS: list[Pin] = [  # (python -m raysweep._upstream prints the current digests)
    Pin('ray._raylet:Config', ''),
    Pin('ray._raylet:AuthenticationTokenLoader', ''),
    Pin('ray._raylet:GcsClient', ''),
    Pin('ray._private.authentication.authentication_token_generator:generate_new_authentication_token',
        'b639d643a762a1a7'),
    Pin('ray._private.utils:write_ray_address', '19f8e17257fd2795'),
    Pin('ray._private.runtime_env.packaging:_dir_travel', 'de99ce9a65f8d018'),
    Pin('ray.autoscaler._private.local.config:get_state_path', '149ef198f41e61b6'),
    Pin('ray.autoscaler._private.util:prepare_config', '510c59b5f08e7bd5'),
    Pin('ray.autoscaler._private.util:validate_config', '8ac2512b4fad665b'),
    Pin('ray._private.ray_constants:ENABLE_RAY_CLUSTER', ''),
]

LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for a cluster on a laptop OS; set to "0", Ray binds its processes to
loopback (read into `ray._private.ray_constants.ENABLE_RAY_CLUSTER` at import)."""


def use_token_auth() -> None:
    """Make this process send the token RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH name now:
    Ray's clients add it when the mode is token, and read the mode once into
    `ray._raylet.Config`, so re-read it."""
    if os.environ.get("RAY_AUTH_MODE") == "disabled":
        return
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # (Cython)

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")
    # The loader caches the first token it read; this process may talk to another
    # cluster (another token) now.
    AuthenticationTokenLoader.instance().reset_cache()



def gcs_refuses_token(gcs_address: str, timeout_s: float = 5.0) -> bool:
    """True when the GCS at host:port refuses this process's token (or its lack of
    one) on a single request: `ray.init` retries such a refusal for about 20 s
    before it raises. Any other outcome (an answer, a timeout, another error) is False:
    `ray.init` then says what it finds. Uses Ray's Cython GCS client
    (`ray._raylet.GcsClient`), whose refusal is `ray.exceptions.AuthenticationError`."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # (Cython)
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=gcs_address).internal_kv_get(b"session_name", namespace=b"session", timeout=timeout_s)
    except AuthenticationError:
        return True
    except Exception:  # noqa: BLE001 - not ours to judge: ray.init reports it
        return False
    return False



def generate_token() -> str:
    """A new cluster token, as `ray get-auth-token --generate` makes it."""
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    return generate_new_authentication_token()



def record_cluster_address(gcs_address: str) -> None:
    """Point $RAY_TMPDIR/ray/ray_current_cluster (the cluster's own temp folder,
    `cluster.isolation`) at the in-process cluster: Ray's own actors
    (Train V2's placement-group cleaner, via the state API) find "the cluster" through
    it, and left pointing at a cluster that `ray start` ran earlier their lookups time
    out, the cleaner's thread dies, and CPUs of trials Tune stopped are never freed."""
    from ray._private.utils import write_ray_address

    write_ray_address(gcs_address)



def walk_upload(root: Path, handle: Callable[[Path], None]) -> None:
    """Call `handle` on each path Ray's job upload would include from `root` (its own
    .gitignore/.rayignore rules: `ray._private.runtime_env.packaging._dir_travel`)."""
    from ray._private.runtime_env.packaging import _dir_travel

    quiet = logging.getLogger("raysweep.upload")
    quiet.setLevel(logging.WARNING)
    _dir_travel(root, [], handle, include_gitignore=True, logger=quiet)



def local_provider_state(cluster_name: str) -> Path:
    """Where Ray's cluster launcher keeps, on the machine running `ray up`, the `local`
    provider's nodes and their tags (what it set up on each, with which file mounts):
    `ray/autoscaler/_private/local/config.py: get_state_path` (the Ray temp dir:
    RAY_TMPDIR, else TMPDIR, else /tmp)."""
    from ray.autoscaler._private.local.config import get_state_path

    return Path(get_state_path(cluster_name))



def validate_launcher_config(raw: dict[str, Any]) -> None:
    """Ray's own cluster-launcher schema check, as `ray up` runs it (raises
    jsonschema.ValidationError, ValueError, KeyError or RuntimeError)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(raw))


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """While an in-process cluster starts: its processes inherit the switch, and this
    process (where Ray may be imported already) reads the constant it sets."""
    from ray._private import ray_constants

    before_env, before_flag = os.environ.get(LOOPBACK_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(LOOPBACK_SWITCH, None)
        else:
            os.environ[LOOPBACK_SWITCH] = before_env
