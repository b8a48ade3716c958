"""The benchmark registry (raysweep.testing.bench) and the NullStore. No Ray cluster.
gpu_check's promise to load no Ray, MLflow, Optuna or pydantic, in a fresh process:
tests/integration/test_fresh_processes.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysweep.testing.bench import Entry, Registry, run_entries, run_entry


def registry() -> Registry:
    entries = Registry()
    entries.register("fast", target="ratio <= 1.05", table=lambda r: [f"ratio {r['ratio']}"],
                     met=lambda r: r["ratio"] <= 1.05)(lambda ctx: {"ratio": ctx["fast"]})
    entries.register("slow", target="ratio <= 1.05", table=lambda r: [f"ratio {r['ratio']}"],
                     met=lambda r: r["ratio"] <= 1.05)(lambda ctx: {"ratio": ctx["slow"]})
    entries.register("tiny", target="only at full size", table=lambda r: [], met=lambda r: None)(lambda ctx: {})
    return entries


def test_entry_result_records_target_and_met() -> None:
    entries = registry()
    assert list(entries) == ["fast", "slow", "tiny"] and isinstance(entries["fast"], Entry)
    result = run_entry(entries["fast"], {"fast": 1.0})
    assert result["entry"] == "fast" and result["ratio"] == 1.0
    assert result["target"] == "ratio <= 1.05" and result["met"] is True
    assert run_entry(entries["fast"], {"fast": 1.2})["met"] is False
    assert run_entry(entries["tiny"], {})["met"] is None


def test_all_met_passes_and_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    assert run_entries(registry(), ["fast", "tiny"], {"fast": 1.0}, out=out, header=["Machine: test"],
                       meta={"machine": "test"}, echo=False) is True
    written = json.loads(out.read_text())
    assert written["machine"] == "test" and written["missed"] == [] and written["not_decided"] == ["tiny"]
    assert [(r["entry"], r["target"], r["met"]) for r in written["results"]] == [
        ("fast", "ratio <= 1.05", True), ("tiny", "only at full size", None)]
    text = out.with_suffix(".md").read_text()
    assert text.startswith("Machine: test") and "**fast**" in text and "met: yes" in text and "ratio 1.0" in text


def test_a_missed_target_fails_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.json"
    assert run_entries(registry(), ["fast", "slow"], {"fast": 1.0, "slow": 1.5}, out=out) is False
    written = json.loads(out.read_text())
    assert written["missed"] == ["slow"]
    assert [r["met"] for r in written["results"]] == [True, False]
    assert "target missed: slow (ratio <= 1.05)" in capsys.readouterr().out


def test_an_entry_that_raises_counts_as_missed_and_the_rest_still_run(tmp_path: Path) -> None:
    entries = registry()

    @entries.register("broken", target="anything", table=lambda r: [], met=lambda r: True)
    def broken(ctx: object) -> dict:
        raise RuntimeError("no cluster")

    out = tmp_path / "b.json"
    assert run_entries(entries, ["broken", "fast"], {"fast": 1.0}, out=out, echo=False) is False
    first, second = json.loads(out.read_text())["results"]
    assert first["met"] is False and first["error"] == "RuntimeError: no cluster" and first["target"] == "anything"
    assert second["met"] is True
    assert "Failed: RuntimeError: no cluster" in out.with_suffix(".md").read_text()


def test_registry_refuses_duplicates_and_unknown_names() -> None:
    entries = registry()
    with pytest.raises(ValueError, match="twice"):
        entries.add(Entry("fast", lambda ctx: {}, lambda r: [], "t", lambda r: None))
    assert entries.unknown(["fast", "nope"]) == ["nope"]
    with pytest.raises(ValueError, match="nope"):
        run_entries(entries, ["nope"], {}, echo=False)


def test_null_store_overrides_every_public_run_store_method() -> None:
    from raysweep.testing.stores import NullStore
    from raysweep.tracking.store import RunStore

    public = {name for name in vars(RunStore) if not name.startswith("_") and callable(vars(RunStore)[name])}
    assert public <= set(vars(NullStore)), f"NullStore leaves {sorted(public - set(vars(NullStore)))} to MLflow"
    store = NullStore()
    assert isinstance(store, RunStore) and store.uri == "none" and not hasattr(store, "client")
    first, second = store.open("sweep/a", "a", params={"x": 1}), store.open("sweep/a", "a")
    assert first != second
    store.log_params(first, {"x": 1})
    store.log_metrics(first, {"loss": 1.0}, step=0)
    store.set_tags(first, {"k": "v"})
    store.log_text(first, "text", "file.txt")
    store.close(first, "FINISHED")
    assert store.find("sweep/a") is None and store.children(first) == []
