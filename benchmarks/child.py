"""One benchmark entry in a process of its own: the child that `benchmarks.core.run_isolated` starts.

    python -m benchmarks.child JOB.json

JOB.json (written by the parent): the registry ("module:NAME" or "script.py:NAME"),
the entry's name and module, the context factory and the run's arguments, the
parent's sys.path, a scratch folder (this process's temporary files: the parent
removes it, also after a kill), the stage file (each stage appended as a JSON line)
and the result file. Runs the entry with `benchmarks.core.run_entry` (no time limit
here: the parent kills this process's tree at the limit) and writes its result.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import core


def load(ref: str) -> Any:
    """"module:NAME" or "path/script.py:NAME" -> the object (a script is imported as a
    module named after its file, with its folder on sys.path, so that its functions
    pickle by that name into processes it spawns)."""
    where, _, name = ref.rpartition(":")
    if where.endswith(".py"):
        path = Path(where).resolve()
        sys.path.insert(0, str(path.parent))
        module = importlib.import_module(path.stem)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    sys.path[:0] = [p for p in job["sys_path"] if p not in sys.path]
    tempfile.tempdir = job["scratch"]  # mkdtemp & co. under the folder the parent removes
    registry = load(job["registry"])
    if job["module"] not in ("__main__", "") and job["entry"] not in registry:
        importlib.import_module(job["module"])  # registers the entry
    entry = registry[job["entry"]]
    context = load(job["context"])(argparse.Namespace(**job["args"]))
    result = core.run_entry(entry, context, on_failure=getattr(context, "after_failure", None),
                            stage_file=job["stage_file"])
    Path(job["result_file"]).write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    main(sys.argv[1])
