"""`raysweep register RUN_ID` and `raysweep tune --register`: a run's model into the
MLflow Model Registry, tagged with where it came from.

The model is rebuilt from the run's latest checkpoint with the trainer module's
`build_model(params)` (plain trainers) or its LightningModule, logged with
`mlflow.pytorch.log_model` into the run that trained it, and registered. The version
carries tags linking the sweep's parent run, the trial's run, the data fingerprint
and the git commit.

What a run recorded is not trusted: its trainer name must be a dotted module name that
resolves, without running any code, to a module file importable from the repo root or
installed, before it is imported; the model is logged in the pt2 (torch.export) format
explicitly (MLflow's default turns to pickle on a Databricks tracking URI), so it loads
with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import inspect
import json
import keyword
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import torch

from raysweep.data.storage import filesystem, is_object_store
from raysweep.driver.preflight import import_trainer
from raysweep.errors import UserInputError
from raysweep.tracking import tags as tag
from raysweep.tracking.lookup import RecordedRun, client, get_run, how_to_list, load_recorded
from raysweep.tracking.store import tracking_uri
from raysweep.worker.checkpoint import load_state

# A trainer name a spec may give (config.spec.Spec.trainer), in ASCII: dotted identifiers.
TRAINER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# MLflow's graph format (torch.export): weights and graph, no pickled Python objects.
SERIALIZATION_FORMAT = "pt2"


@dataclass
class Registered:
    name: str
    version: str
    run_id: str
    model_uri: str

    def summary(self) -> str:
        return (f"registered model {self.name!r} version {self.version} from run {self.run_id} "
                f"(load: mlflow.pytorch.load_model('models:/{self.name}/{self.version}'))")


def check_trainer_name(run_id: str, trainer: Any) -> str:
    """The recorded trainer name, checked before anything imports it: a dotted module
    name (TRAINER_NAME, no keywords) that resolves, without running any module code, to
    a module file `import_trainer` would load (from the repo root, the job's working dir,
    or installed). UserInputError naming the run and the record's field otherwise."""
    where = f"run {run_id!r}: its recorded trainer (record.json spec.trainer)"
    if not isinstance(trainer, str) or len(trainer) > 200 or not TRAINER_NAME.fullmatch(trainer) \
            or any(keyword.iskeyword(part) for part in trainer.split(".")):
        shown = repr(trainer[:200] if isinstance(trainer, str) else trainer)
        raise UserInputError(f"{where} {shown} is not a dotted Python module name (letters, digits, _ and dots); "
                             "not imported")
    found = module_file(trainer)
    if found is None:
        raise UserInputError(f"{where} {trainer!r} is no module file under {os.getcwd()} or among the installed "
                             "packages; not imported (run `raysweep register` from the repo the run trained from)")
    if not trusted_module(trainer, found):
        raise UserInputError(
            f"{where} {trainer!r} is {found}, not a module of the project under {os.getcwd()}; not imported "
            f"(a record could name any installed module, and importing it runs its code: name trusted package "
            f"prefixes in {TRUSTED_ENV}, comma-separated, to allow one)")
    return trainer


TRUSTED_ENV = "RAYSWEEP_TRUSTED_TRAINERS"
"""Module name prefixes (comma-separated) of installed packages whose trainers a record
may name, beside the project's own modules and raysweep's."""


def trusted_module(name: str, origin: str) -> bool:
    """Whether a recorded module name may be imported: a file of the project (under the
    working dir), of raysweep itself, or of a package the user named in
    RAYSWEEP_TRUSTED_TRAINERS; never a `__main__` module (it acts on import)."""
    if "__main__" in name.split("."):
        return False
    path = os.path.realpath(origin)

    def under(root: str) -> bool:
        return path.startswith(os.path.realpath(root) + os.sep)

    if under(os.path.dirname(os.path.abspath(__file__))):  # raysweep's own (raysweep.testing.probe)
        return True
    installed = any(under(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}) or any(
        part in ("site-packages", "dist-packages") for part in path.split(os.sep))
    if under(os.getcwd()) and not installed:  # (a virtualenv inside the project is not the project)
        return True
    prefixes = [p.strip() for p in os.environ.get(TRUSTED_ENV, "").split(",") if p.strip()]
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_file(name: str) -> str | None:
    """The file `import_trainer(name)` would load, found by the import system's finders
    alone (no package's __init__ runs); None when there is none (built-in and frozen
    modules, namespace packages, and names that do not resolve)."""
    if os.getcwd() not in sys.path:  # as import_trainer does
        sys.path.insert(0, os.getcwd())
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: finders only, nothing executed
    except (ImportError, ValueError):
        return None
    for i in range(len(rest)):
        if spec is None or spec.submodule_search_locations is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join([top, *rest[:i + 1]]),
                                                         list(spec.submodule_search_locations))
    if spec is None or not spec.has_location or not spec.origin or not os.path.isfile(spec.origin):
        return None
    return spec.origin


def build_from_checkpoint(trainer: str, params: dict[str, Any], checkpoint_dir: str) -> torch.nn.Module:
    """The trained model: the trainer's architecture with the checkpoint's weights."""
    module = import_trainer(trainer)
    state = load_state(checkpoint_dir)
    if callable(getattr(module, "build_model", None)) and "model" in state:
        model = module.build_model(params)
        model.load_state_dict(state["model"])
        return model.eval()
    from raysweep.worker.lightning import find_module_factory  # (lazy: only for LightningModules)

    factory = find_module_factory(module)
    if factory is not None and "state_dict" in state:
        model = factory(params)
        model.load_state_dict(state["state_dict"])
        return model.eval()
    raise UserInputError(
        f"trainer {trainer!r}: cannot rebuild its model: define build_model(params) (with the checkpoint "
        "holding state['model']) or a LightningModule"
    )


def example_batch(record: dict[str, Any], rows: int = 8) -> Any:
    """The first rows of the recorded validation data as the model sees them: the
    feature tensor `x` (tabular) or, for named batches, the batch's tensors after the
    trainer's `transform` (as a validation batch, rng=None) without the label. Padded
    sequence columns with a `max_length` are padded to it: torch.export fixes the
    length axis, so the registered model takes inputs of that length."""
    from raysweep.config.spec import DataSpec
    from raysweep.data.columns import Kind
    from raysweep.data.files import build_layout
    from raysweep.data.storage import open_parquet

    spec = record["spec"]
    data = DataSpec(**spec["data"])
    first = record["data"]["files"]["validation"][0]["path"]
    parquet = open_parquet(first)
    layout = build_layout(data, parquet.schema_arrow, first, "record")
    batch = layout.deliver(layout.read([parquet.read_row_group(0, columns=layout.names).slice(0, rows)]))
    if not layout.named:
        return batch[0] if isinstance(batch, tuple) else batch
    for column in layout.columns:
        size = column.options.max_length
        if column.kind is Kind.SEQUENCE and size and batch[column.name].shape[1] < size:
            batch[column.name] = torch.nn.functional.pad(batch[column.name], (0, size - batch[column.name].shape[1]),
                                                         value=column.options.pad_value)
    transform = getattr(import_trainer(spec["trainer"]), "transform", None)
    if transform is not None:
        batch = transform(batch, None)
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and k != data.label}


class NamedInputs(torch.nn.Module):
    """A model taking a dict batch, as one taking its tensors positionally (torch.export
    and MLflow's pt2 format take positional tensors); `keys` names them, in order."""

    def __init__(self, model: torch.nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

        def forward(*tensors: torch.Tensor) -> Any:
            return self.model(dict(zip(self.keys, tensors, strict=True)))

        # torch.export binds inputs by forward's signature: one named parameter per key.
        forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in keys])
        self.forward = forward


def signature_of(example: dict[str, torch.Tensor]) -> Any:
    """The MLflow signature of a named batch: one TensorSpec per key, batch axis free."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(t.numpy().dtype, (-1, *t.shape[1:]), name=k)
                                         for k, t in example.items()]))


def pick_from_front(run: Any, metric: str) -> str:
    """A multi-objective sweep's Pareto front member with the best `metric`: its run id."""
    objectives = dict(json.loads(run.data.tags.get(tag.OBJECTIVES, "[]")))
    if metric not in objectives:
        raise UserInputError(f"--pick {metric}: not an objective of sweep {run.info.run_id!r} "
                             f"({', '.join(objectives) or 'it has one objective: register its best trial'})")
    text = run.data.tags.get(tag.PARETO_FRONT, "[]")
    if not text.startswith("["):  # (a long front lives in the artifact only)
        text = Path(client().download_artifacts(run.info.run_id, "pareto_front.json")).read_text()
    front = [m for m in json.loads(text) if metric in m]
    if not front:
        raise UserInputError(f"run {run.info.run_id!r}: this sweep's Pareto front is empty (no trial ended well "
                             "and met the constraints)")
    sign = 1 if objectives[metric] == "min" else -1
    return str(min(front, key=lambda m: sign * float(m[metric]))["run_id"])


def _target(run_id: str, pick: str | None = None) -> RecordedRun:
    run = get_run(run_id)
    if run.data.tags.get(tag.KIND) == "sweep":
        best = pick_from_front(run, pick) if pick else run.data.tags.get(tag.BEST_RUN_ID)
        if not best:
            raise UserInputError(f"run {run_id!r}: this sweep has no finished best trial to register")
        run_id = best
    elif pick:
        raise UserInputError(f"--pick {pick}: run {run_id!r} is not a sweep (--pick chooses a sweep's front member)")
    recorded = load_recorded(run_id)
    if recorded.run.info.status != "FINISHED" or tag.CHECKPOINT not in recorded.run.data.tags:
        raise UserInputError(
            f"run {run_id!r}: only a FINISHED run with a checkpoint can be registered "
            f"(status {recorded.run.info.status}); {how_to_list(tracking_uri())}")
    return recorded


@contextlib.contextmanager
def local_checkpoint(run_id: str, checkpoint: str) -> Iterator[str]:
    """The checkpoint folder on this machine: as it is when local; a temporary copy of
    it when it is in an object store (s3://, gs://: a sweep of a cluster that shares
    nothing with this machine), removed afterwards."""
    if not is_object_store(checkpoint):
        if not os.path.isdir(checkpoint):
            raise UserInputError(f"run {run_id!r}: its checkpoint {checkpoint} is not on this machine")
        yield checkpoint
        return
    import pyarrow.fs as pafs

    fs, path = filesystem(checkpoint)
    with tempfile.TemporaryDirectory(prefix="raysweep-checkpoint-") as folder:
        try:
            pafs.copy_files(path, folder, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        except OSError as exc:
            raise UserInputError(f"run {run_id!r}: its checkpoint {checkpoint} cannot be read: "
                                 f"{str(exc).splitlines()[0]}") from None
        if not os.listdir(folder):
            raise UserInputError(f"run {run_id!r}: its checkpoint {checkpoint} is empty or gone")
        yield folder


def register(run_id: str, name: str | None = None, pick: str | None = None) -> Registered:
    """Register a run's model; for a sweep, its best trial's (`pick`: a multi-objective
    sweep's front member with the best value of that objective)."""
    recorded = _target(run_id, pick)
    spec = recorded.record["spec"]
    check_trainer_name(recorded.run_id, spec.get("trainer"))
    name = name or spec["name"]
    checkpoint = recorded.run.data.tags[tag.CHECKPOINT]
    with local_checkpoint(recorded.run_id, checkpoint) as folder:
        model = build_from_checkpoint(spec["trainer"], recorded.params, folder)
    example = example_batch(recorded.record)
    signature = None
    if isinstance(example, dict):
        model, inputs = NamedInputs(model, list(example)), tuple(t.numpy() for t in example.values())
        signature = signature_of(example)
        shown = {k: tuple(v.shape) for k, v in example.items()}
        wanted = f"the batch dict {shown}"
    else:
        inputs, wanted = example.numpy(), f"the feature tensor x (shape {tuple(example.shape)}, {example.dtype})"
    try:
        with torch.no_grad():
            model(*[torch.from_numpy(a) for a in (inputs if isinstance(inputs, tuple) else (inputs,))])
    except Exception as exc:  # the model does not take what the trainer trained it on
        raise UserInputError(
            f"trainer {spec['trainer']!r}: its model must take {wanted}: {type(exc).__name__}: {exc}") from None
    mlflow.set_tracking_uri(tracking_uri())
    status, ended = recorded.run.info.status, recorded.run.info.end_time
    try:
        with mlflow.start_run(run_id=recorded.run_id):
            # pt2 (torch.export): the graph and weights, no pickled Python objects to trust. Said
            # explicitly: MLflow's default is pickle when the tracking URI is Databricks.
            info = mlflow.pytorch.log_model(model, name="model", input_example=inputs, signature=signature,
                                            serialization_format=SERIALIZATION_FORMAT,
                                            pip_requirements=[f"torch=={torch.__version__}"])
    finally:  # (start_run reopened the run, and ends a failed log_model's as FAILED: put back what it was)
        client().set_terminated(recorded.run_id, status, end_time=ended)
    version = mlflow.register_model(info.model_uri, name)
    tags = {
        tag.RUN_ID: recorded.run_id,
        tag.SWEEP_RUN_ID: recorded.run.data.tags.get(tag.PARENT, ""),
        tag.DATA_SHA256: recorded.record["data"]["sha256"],
        tag.GIT_COMMIT: recorded.record["git"]["commit"] or "none",
        tag.CHECKPOINT: checkpoint,
        tag.TRAINER: spec["trainer"],
    }
    for key, value in tags.items():
        client().set_model_version_tag(name, version.version, key, value)
    return Registered(name, str(version.version), recorded.run_id, info.model_uri)
