"""The benchmark registry (benchmarks.core) run here, the Markdown, merge_bench's
refusal of short runs, and the NullStore. No process: run_entries, which runs each
entry in a process of its own, is tested in tests/faults/test_bench_faults.py.
gpu_check's promise to load no Ray, MLflow, Optuna or pydantic, in a fresh process:
tests/integration/test_fresh_processes.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks.core import Entry, Registry, markdown, run_entry, summary


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
    assert entries["fast"].module == __name__
    result = run_entry(entries["fast"], {"fast": 1.0})
    assert result["entry"] == "fast" and result["ratio"] == 1.0
    assert result["target"] == "ratio <= 1.05" and result["met"] is True
    assert run_entry(entries["fast"], {"fast": 1.2})["met"] is False
    assert run_entry(entries["tiny"], {})["met"] is None


def test_markdown_and_summary_of_results() -> None:
    entries = registry()
    results = [run_entry(entries["fast"], {"fast": 1.0}), run_entry(entries["slow"], {"slow": 1.5}),
               run_entry(entries["tiny"], {}), {"entry": "fast", "error": "RuntimeError: no cluster", "met": False,
                                                "stage": "start", "timed_out": False}]
    assert summary(results) == {"missed": ["slow", "fast"], "not_decided": ["tiny"], "failed": ["fast"],
                                "timed_out": []}
    text = markdown(entries, results, ["Machine: test"])
    assert text.startswith("Machine: test") and "**fast**" in text and "met: yes" in text and "ratio 1.0" in text
    assert "Failed: RuntimeError: no cluster (in stage 'start')" in text and "met: NO" in text


def test_registry_refuses_duplicates_and_unknown_names() -> None:
    entries = registry()
    with pytest.raises(ValueError, match="twice"):
        entries.add(Entry("fast", lambda ctx: {}, lambda r: [], "t", lambda r: None))
    assert entries.unknown(["fast", "nope"]) == ["nope"]


def test_merge_bench_refuses_a_paired_entry_with_under_5_pairs() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    try:
        import merge_bench
    finally:
        sys.path.pop(0)
    assert merge_bench.too_few_pairs({"entry": "dp", "pairs": 3}) == 3
    assert merge_bench.too_few_pairs({"entry": "dp", "pairs": 5}) is None
    assert merge_bench.too_few_pairs({"entry": "search"}) is None


def test_no_engine_module_imports_the_benchmarks() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = [str(p.relative_to(root)) for p in (root / "raysweep").rglob("*.py")
                 if "benchmarks" in p.read_text() and ("import benchmarks" in p.read_text()
                                                       or "from benchmarks" in p.read_text())]
    assert offenders == []


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
