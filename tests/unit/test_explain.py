"""Every spec and profile field is documented; `--explain` and the spec reference
(docs/spec-reference.md, linked from the README) come from those docstrings and
cannot drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from raysweep.cli import main
from raysweep.config.explain import explain, explain_markdown, rows
from raysweep.config.profile import ClusterProfile
from raysweep.config.spec import Spec

SPEC_REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "spec-reference.md"
START, END = "<!-- spec-reference:start -->", "<!-- spec-reference:end -->"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every model class an annotation mentions (unions, Annotated, list/dict args)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _reachable(root: type[BaseModel]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model not in seen:
            seen.append(model)
            todo.extend(m for f in model.model_fields.values() for m in _models_in(f.annotation))
    return seen


def test_every_field_has_a_description() -> None:
    models = {m for root in (Spec, ClusterProfile) for m in _reachable(root)}
    assert len(models) >= 14  # Spec's 12 models and the profile's 2: the walk found them all
    missing = [f"{m.__name__}.{name}" for m in models for name, field in m.model_fields.items()
               if not (field.description or "").strip()]
    assert not missing, f"fields without a docstring (write one right under the field): {missing}"


def test_explain_lists_every_field_once_per_param_kind() -> None:
    paths = [row.path for row in rows()]
    for path in ("name", "data.features", "scheduler.max_epochs", "budget.max_concurrent_trials",
                 "lightning.gradient_clip_val", "space.<name>.choices"):
        assert path in paths
    assert paths.count("space.<name>.low") == 2  # float and int
    assert paths.count("space.<name>.type") == 3
    text = explain()
    assert "scheduler.max_epochs" in text and "int >= 1, required" in text
    assert "budget.max_concurrent_trials" in text and "default null" in text
    assert "worker_nodes[].num_cpus" in explain(ClusterProfile)


def test_spec_reference_is_up_to_date() -> None:
    text = SPEC_REFERENCE.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    section = text.split(START, 1)[1].split(END, 1)[0]
    assert section.strip() == explain_markdown().strip(), (
        "docs/spec-reference.md is out of date: replace the text between the "
        f"{START} / {END} markers with `python -c 'from raysweep.config.explain import "
        "explain_markdown; print(explain_markdown(), end=\"\")'`"
    )


def test_check_explain_prints_the_reference(write_spec, capsys) -> None:
    assert main(["check", str(write_spec()), "--explain"]) == 0
    out = capsys.readouterr().out
    assert ": ok: trainer raysweep.testing.probe" in out
    assert "scheduler.max_epochs" in out and "space.<name>.choices" in out
