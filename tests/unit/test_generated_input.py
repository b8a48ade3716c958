"""Generated bad input (issue 29 item 2): `raysweep check` on specs and data that
Hypothesis makes, seeded, each case exiting 0 or 2 with one line on stderr, never a
traceback, before Ray or MLflow start.

- any YAML document (scalars, lists and mappings of any depth, keys the spec knows and
  keys it does not) as the spec;
- the probe spec with one to three mutations: a field set to a value of another type,
  a field removed, an unknown field added, at any depth;
- the probe data with one mutation of one file: a column's type changed, a column
  dropped or renamed, nulls, NaN or infinity in a feature, no rows, the file cut
  short, bytes overwritten, an extra file of another schema.

The `world` fixture (tests/unit/conftest.py) checks afterwards that nothing started
or was written. The hand-written hostile corpus (tests/unit/test_hostile_input.py) says what each
refusal must name; here the promise is only the exit code and the one line. With
$RAYSWEEP_FAULTS_OUT set (scripts/faults.sh) each test records how many cases it
tried and how many were refused.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from raysweep.cli import main

SPEC_KEYS = ["name", "trainer", "data", "params", "space", "sampler", "scheduler", "budget", "scaling", "seed",
             "storage_path", "checkpoint", "failure", "lightning", "deterministic", "constraints", "train", "x"]
CASES = int(os.environ.get("RAYSWEEP_GENERATED_CASES", "400"))
"""Cases per test (scripts/faults.sh: 3000)."""
SETTINGS = settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["", "-", "~", "s3:/x", "..", "1e30", "nan", "ÿ"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(SPEC_KEYS), st.text(max_size=6)),
                                                 inner, max_size=4)), max_leaves=12)


def check(spec: Path, capsys: pytest.CaptureFixture[str], outcomes: Counter[int]) -> None:
    """`raysweep check SPEC` in this process: 0, or 2 with one line naming what."""
    capsys.readouterr()
    code = main(["check", str(spec)])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("raysweep: error: ") and "\n" not in err and "Traceback" not in err, err
    outcomes[code] += 1


def test_any_yaml_document_as_a_spec(world, capsys, fault_figures) -> None:
    root, _, _ = world
    outcomes: Counter[int] = Counter()

    @seed(29)
    @SETTINGS
    @given(document=st.one_of(values, st.dictionaries(st.sampled_from(SPEC_KEYS), values, max_size=8)))
    def case(document: Any) -> None:
        spec = root / "spec.yaml"
        spec.write_text(yaml.safe_dump(document, allow_unicode=True))
        check(spec, capsys, outcomes)

    case()
    fault_figures(tried=sum(outcomes.values()), refused=outcomes[2])
    assert outcomes[2] == sum(outcomes.values())  # (no random document is a valid spec)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a nested dict/list (the spec's fields at any depth)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _mutate(raw: dict, path: tuple[Any, ...], how: str, value: Any) -> None:
    node = raw
    for key in path[:-1]:
        node = node[key]
    last = path[-1]
    if how == "set":
        node[last] = value
    elif how == "drop" and isinstance(node, dict):
        del node[last]
    elif how == "add" and isinstance(node, dict):
        node[f"{last}_extra" if isinstance(last, str) else "extra"] = value


def test_mutated_specs(world, capsys, fault_figures) -> None:
    root, spec, _ = world
    raw = yaml.safe_load(spec.read_text())
    paths = _paths(raw)
    outcomes: Counter[int] = Counter()

    @seed(29)
    @SETTINGS
    @given(mutations=st.lists(st.tuples(st.sampled_from(paths), st.sampled_from(["set", "drop", "add"]), values),
                              min_size=1, max_size=3))
    def case(mutations: list[tuple[tuple[Any, ...], str, Any]]) -> None:
        mutated = yaml.safe_load(yaml.safe_dump(raw))
        for path, how, value in mutations:
            try:
                _mutate(mutated, path, how, value)
            except (KeyError, IndexError, TypeError):  # (an earlier mutation removed the path)
                pass
        spec = root / "spec.yaml"
        spec.write_text(yaml.safe_dump(mutated, allow_unicode=True))
        check(spec, capsys, outcomes)

    case()
    fault_figures(tried=sum(outcomes.values()), refused=outcomes[2])
    assert outcomes[2] > 0


def _cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _overwrite(path: Path, fraction: float) -> None:
    data = bytearray(path.read_bytes())
    at = int((len(data) - 16) * fraction)
    data[at:at + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def _table_change(how: str, fraction: float) -> Any:
    def change(table: pa.Table) -> pa.Table:
        names = table.column_names
        column = names[int(fraction * len(names)) % len(names)]
        index = names.index(column)
        values = table.column(column).to_pylist()
        row = int(fraction * max(len(values) - 1, 0))
        if how == "to_string":
            return table.set_column(index, column, pa.array([str(v) for v in values]))
        if how == "to_float":
            return table.set_column(index, column, pa.array([float(v) for v in values], pa.float64()))
        if how == "drop":
            return table.remove_column(index)
        if how == "rename":
            return table.rename_columns([n if n != column else f"{n}_renamed" for n in names])
        if how == "null":
            values[row] = None
            return table.set_column(index, column, pa.array(values, table.schema.field(column).type))
        if how in ("nan", "inf"):
            floats = [float(v) for v in values]
            floats[row] = math.nan if how == "nan" else -math.inf
            return table.set_column(index, column, pa.array(floats, pa.float64()))
        if how == "empty":
            return table.slice(0, 0)
        raise AssertionError(how)

    return change


DATA_MUTATIONS = ["to_string", "to_float", "drop", "rename", "null", "nan", "inf", "empty", "cut", "overwrite",
                  "foreign_file"]


def test_mutated_data(world, capsys, fault_figures) -> None:
    root, spec, data = world
    pristine = root / "pristine"
    shutil.copytree(data, pristine)
    files = sorted(p.relative_to(data) for p in data.rglob("*.parquet"))
    outcomes: Counter[int] = Counter()
    kinds: Counter[str] = Counter()

    @seed(29)
    @SETTINGS
    @given(file=st.sampled_from(files), how=st.sampled_from(DATA_MUTATIONS), fraction=st.floats(0.0, 0.999))
    def case(file: Path, how: str, fraction: float) -> None:
        shutil.rmtree(data)
        shutil.copytree(pristine, data)
        path = data / file
        if how == "cut":
            _cut(path, fraction)
        elif how == "overwrite":
            _overwrite(path, fraction)
        elif how == "foreign_file":
            pq.write_table(pa.table({"other": np.arange(5)}), path.with_name("foreign.parquet"))
        else:
            pq.write_table(_table_change(how, fraction)(pq.read_table(path)), path)
        kinds[how] += 1
        check(spec, capsys, outcomes)

    case()
    fault_figures(tried=sum(outcomes.values()), refused=outcomes[2], mutations=dict(kinds))
    assert outcomes[2] > 0 and set(kinds) == set(DATA_MUTATIONS)
