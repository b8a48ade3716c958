"""The fault suite's tables in docs/faults.md are the ones scripts/fault_table.py
writes from docs/faults.json: a figure in the doc is the one the runs left behind."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _fault_table():
    spec = importlib.util.spec_from_file_location("fault_table", REPO / "scripts" / "fault_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_tables_are_written_from_the_figures() -> None:
    table = _fault_table()
    figures = json.loads((REPO / "docs" / "faults.json").read_text())
    doc = (REPO / "docs" / "faults.md").read_text()
    block = re.search(re.escape(table.START) + "\n(.*?)\n" + re.escape(table.END), doc, re.S)
    assert block is not None, "docs/faults.md has no fault-table block"
    assert block.group(1) == table.tables(figures), "run: python scripts/fault_table.py docs/faults.json docs/faults.md"


def test_a_planted_failure_moves_the_pass_counts() -> None:
    table = _fault_table()
    figures = json.loads((REPO / "docs" / "faults.json").read_text())
    case = next(c for c in figures["cases"] if not c["case"].startswith("test_hostile_input"))
    case.update(runs=3, passed=3)
    before = table.tables(figures)
    case["passed"] = 2
    after = table.tables(figures)
    assert f"| `{case['case']}` | 3 / 3 |" in before and f"| `{case['case']}` | 2 / 3 |" in after
