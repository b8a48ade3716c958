"""Merge the entries of a partial benchmark run into the full run's JSON and Markdown.

    .venv/bin/python scripts/merge_bench.py docs/bench.json RERUN.json "NOTE"

Each entry of RERUN.json replaces the same entry in docs/bench.json (keeping its
place), with NOTE (for example "rerun alone with --only overhead at <commit>") in
its `note`; `missed` / `not_decided` are recounted and docs/bench.md is written
again from the merged results with the entries' tables (benchmarks/). An interleaved
entry run with fewer than 5 pairs is refused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.core import MIN_PAIRS, markdown, summary  # noqa: E402
from benchmarks.entries import load_all  # noqa: E402  (the entries' tables)


def too_few_pairs(result: dict) -> int | None:
    """The pairs of an interleaved entry's result when under MIN_PAIRS (a smoke run), else None."""
    pairs = result.get("pairs")
    return pairs if isinstance(pairs, int) and pairs < MIN_PAIRS else None


def main() -> None:
    full_path, rerun_path, note = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    full, rerun = json.loads(full_path.read_text()), json.loads(rerun_path.read_text())
    short = {r["entry"]: too_few_pairs(r) for r in rerun["results"] if too_few_pairs(r) is not None}
    if short:
        sys.exit(f"not merged: {', '.join(f'{k} ({v} pairs)' for k, v in short.items())}: a recorded figure needs "
                 f">= {MIN_PAIRS} interleaved pairs")
    fresh = {r["entry"]: {**r, "note": note} for r in rerun["results"]}
    results = [fresh.pop(r["entry"], r) for r in full["results"]] + list(fresh.values())
    merged = {**full, "results": results, **summary(results)}
    full_path.write_text(json.dumps(merged, indent=2))
    full_path.with_suffix(".md").write_text(
        markdown(load_all(), results, [f"Machine: {merged['machine']}"]) + "\n")
    print(f"merged {', '.join(r['entry'] for r in rerun['results'])} into {full_path}; "
          f"missed: {', '.join(merged['missed']) or 'none'}")


if __name__ == "__main__":
    main()
