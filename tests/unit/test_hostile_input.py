"""The hostile-input corpus: every malformed spec, profile or data set gets exit 2
and one line naming the file and the field or column, before Ray or MLflow start,
with nothing written to MLflow or the run folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from raysweep.cli import main


def edit_spec(change: Callable[[dict], None]) -> Callable:
    def apply(root: Path, spec: Path, data: Path) -> tuple[list[str], Path, str]:
        raw = yaml.safe_load(spec.read_text())
        change(raw)
        spec.write_text(yaml.safe_dump(raw))
        return [], spec, ""

    return apply


def set_path(path: str, value) -> Callable[[dict], None]:
    def change(raw: dict) -> None:
        node = raw
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return change


def spec_text(text: str) -> Callable:
    def apply(root, spec, data):
        spec.write_text(text)
        return [], spec, ""

    return apply


def profile_text(text: str) -> Callable:
    def apply(root, spec, data):
        profile = root / "profile.yaml"
        profile.write_text(text)
        return ["--cluster", str(profile)], profile, ""

    return apply


def retype_column(root, spec, data):
    part = data / "train" / "part-1.parquet"
    table = pq.read_table(part)
    strings = pa.array([str(v) for v in table.column("x0").to_pylist()])
    pq.write_table(table.set_column(table.schema.get_field_index("x0"), "x0", strings), part)
    return [], part, "x0"


def empty_file(root, spec, data):
    part = data / "train" / "part-1.parquet"
    part.write_bytes(b"")
    return [], part, ""


def truncated_file(root, spec, data):
    part = data / "validation" / "part-0.parquet"
    part.write_bytes(part.read_bytes()[:-40])
    return [], part, ""


def mixed_schemas(root, spec, data):
    part = data / "train" / "part-1.parquet"
    table = pq.read_table(part)
    wider = pa.array(table.column("x1").to_numpy().astype(np.float64))
    pq.write_table(table.set_column(table.schema.get_field_index("x1"), "x1", wider), part)
    return [], part, "x1"


def first_data_file(change: Callable[[dict], None]) -> Callable:
    """A spec change the data catches: the blamed file is the first train file."""
    def apply(root, spec, data):
        edit_spec(change)(root, spec, data)
        return [], data / "train" / "part-0.parquet", ""

    return apply


def int_to_float_label(root, spec, data):
    part = data / "validation" / "part-1.parquet"
    table = pq.read_table(part)
    label = pa.array(table.column("label").to_numpy().astype(np.float64))
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", label), part)
    return [], part, "label"


def bad_override(root, spec, data):
    return ["--set", "scaling.num_workers"], "--set 'scaling.num_workers'", ""


def overlapping_splits(root, spec, data):
    """data.train is the data folder: it lists validation/ too (recursively)."""
    edit_spec(set_path("data.train", str(data)))(root, spec, data)
    return [], spec, "data.validation"


CORPUS: dict[str, tuple[Callable, str]] = {
    "spec is not YAML": (spec_text("name: [unclosed\n"), ""),
    "spec is a list": (spec_text("- name: x\n"), ""),
    "spec is empty": (spec_text(""), ""),
    "wrong type": (edit_spec(set_path("budget.num_trials", "many")), "budget.num_trials"),
    "zero workers": (edit_spec(set_path("scaling.num_workers", 0)), "scaling.num_workers"),
    "unknown top-level key": (edit_spec(set_path("epochs", 3)), "epochs"),
    "unknown nested key": (edit_spec(set_path("scheduler.grace", 1)), "scheduler.grace"),
    "space low above high": (edit_spec(set_path("space.lr", {"type": "float", "low": 1.0, "high": 0.1})),
                             "space.lr"),
    "empty categorical": (edit_spec(set_path("space.opt", {"type": "categorical", "choices": []})), "space.opt"),
    "unknown sampler": (edit_spec(set_path("sampler.type", "grid")), "sampler.type"),
    "missing required field": (edit_spec(lambda raw: raw.pop("trainer")), "trainer"),
    "label is not a column": (first_data_file(set_path("data.label", "nope")), "data.label"),
    "feature pattern matches nothing": (first_data_file(set_path("data.features", ["nope*"])), "data.features"),
    "negative cpus per worker": (edit_spec(set_path("scaling.cpus_per_worker", -1)), "scaling.cpus_per_worker"),
    "two NCCL ranks on one GPU": (edit_spec(lambda raw: raw["scaling"].update(num_workers=2, gpus_per_worker=0.5)),
                                  "scaling.gpus_per_worker"),
    "override without a value": (bad_override, "expected key.path=value"),
    "profile is not YAML": (profile_text("name: [x\n"), ""),
    "profile unknown key": (profile_text("name: x\nnum_cpu: 2\n"), "num_cpu"),
    "profile wrong type": (profile_text("name: x\nnum_cpus: lots\n"), "num_cpus"),
    "profile negative cpus": (profile_text("name: x\nnum_cpus: -2\n"), "num_cpus"),
    "column changed type": (retype_column, "x0"),
    "label changed type": (int_to_float_label, "data.label"),
    "empty Parquet file": (empty_file, ""),
    "truncated Parquet file": (truncated_file, ""),
    "mixed schemas in one folder": (mixed_schemas, "data.features"),
    "train folder holds the validation files": (overlapping_splits, "data.validation"),
    "negative sampler seed": (edit_spec(set_path("sampler.seed", -1)), "sampler.seed"),
    "seed past NumPy's range": (edit_spec(set_path("seed", 2**32)), "seed"),
    "seed 1e30": (edit_spec(set_path("seed", 1e30)), "seed"),
    "a fraction above one GPU": (edit_spec(set_path("scaling.gpus_per_worker", 1.5)), "scaling.gpus_per_worker"),
    "CPUs below Ray's step": (edit_spec(set_path("scaling.cpus_per_worker", 0.00001)), "scaling.cpus_per_worker"),
    "storage URI with one slash": (edit_spec(set_path("storage_path", "s3:/bucket/runs")), "storage_path"),
    "data URI with one slash": (edit_spec(set_path("data.train", "s3:/bucket/train")), "data.train"),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_hostile_input(case, world, capsys, fault_figures):
    root, spec, data = world
    make, field = CORPUS[case]
    extra, blamed_file, _ = make(root, spec, data)
    code = main(["train", str(spec), *extra])
    err = capsys.readouterr().err.strip()
    right = (code == 2 and len(err.splitlines()) == 1 and err.startswith("raysweep: error: ")
             and str(blamed_file) in err and field in err and "Traceback" not in err)
    fault_figures(bad_inputs_tried=1, bad_inputs_wrong=int(not right))
    assert right, f"exit {code}: {err!r} (should name {blamed_file} and {field!r})"


def test_one_worker_may_take_a_fraction_of_a_gpu(world, capsys):
    """A fraction of a GPU packs one-worker trials on a GPU; only a multi-worker run
    (two NCCL ranks of one process group on one GPU) is refused, by check and tune too."""
    root, spec, data = world
    edit_spec(set_path("scaling.gpus_per_worker", 0.25))(root, spec, data)
    assert main(["check", str(spec)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    for command in ("check", "tune"):
        assert main([command, str(spec), "--set", "scaling.num_workers=2"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"raysweep: error: {spec}: scaling.gpus_per_worker: ") and "NCCL" in err, err
        assert "\n" not in err
