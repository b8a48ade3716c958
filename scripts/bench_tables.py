"""Rewrite the README's and docs/benchmarks.md's Speed-table rows of the paired entries
(step, dp, ingest, stream, tracking) from docs/bench.json, after scripts/merge_bench.py:

    .venv/bin/python scripts/bench_tables.py [REPO]

Every figure in those rows is read from the merged JSON; none is typed by hand."""
# ruff: noqa: E501  (one f-string per table row)
import json
import sys
from pathlib import Path

repo = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
d = json.loads((repo / "docs/bench.json").read_text())
res = {r["entry"]: r for r in d["results"]}


def row(r, name):
    return next(x for x in r["rows"] if x["name"] == name)


def g(v, n=3):
    return f"{v:.{n}g}"


def yn(b):
    return "yes" if b else "no"


def rng(s, fmt=g):
    return f"{fmt(s['min'])}-{fmt(s['max'])}"


new = {}
st = res["step"]
hand, plain, light = row(st, "hand-written loop"), row(st, "raysweep plain"), row(st, "raysweep lightning")
bare = next(x for x in st["rows"] if x["name"].startswith("Lightning Trainer alone"))
p = st["pairs"]
new["training step, plain trainer"] = (
    f"| training step, plain trainer (MLP 64-512-512-10, batch 64, {st['threads']} thread; {p} interleaved pairs, medians) "
    f"| {plain['ms_per_step']:.2f} ms | hand-written loop {hand['ms_per_step']:.2f} ms "
    f"| {plain['ratio']['median']:.2f} (+{plain['added_ms_per_step']:.2f} ms; pairs {rng(plain['ratio'])}) | +0.5 ms "
    f"| {yn(plain['added_ms_per_step'] <= 0.5)}; losses equal to 5 decimals |")
new["training step, Lightning path"] = (
    f"| training step, Lightning path ({p} interleaved pairs) | {light['ms_per_step']:.2f} ms | {hand['ms_per_step']:.2f} ms; "
    f"a bare Lightning Trainer on the same module and batches: {bare['ms_per_step']:.2f} ms "
    f"| {light['ratio']['median']:.2f} (+{light['added_ms_per_step']:.2f} ms; pairs {rng(light['ratio'])}; raysweep's share "
    f"{st['lightning_raysweep_share_ms']:+.2f} ms) | +0.5 ms | "
    + ("yes |" if light['added_ms_per_step'] <= 0.5 else "no: Lightning's own (docs/lightning-step.md) |"))
dp = res["dp"]
ours, base = row(dp, "raysweep"), row(dp, "plain DDP (gloo)")
new["data-parallel steady state"] = (
    f"| data-parallel steady state, 2 workers ({dp['pairs']} interleaved pairs, medians) | {ours['ms_per_step']:.2f} ms/step "
    f"(set-up {ours['setup_s']:.1f} s) | plain DDP on gloo: {base['ms_per_step']:.2f} ms/step (set-up {base['setup_s']:.1f} s) "
    f"| {ours['step_ratio']['median']:.2f} (pairs {rng(ours['step_ratio'], lambda v: f'{v:.2f}')}) | <= 1.05 | {yn(dp['met'])} |")
ing = res["ingest"]
ours, base = row(ing, "raysweep reader + shard iterator"), row(ing, "pyarrow iter_batches + torch.from_numpy")
new["memory loader ingest"] = (
    f"| memory loader ingest, {ing['parquet_gb_on_disk']:.2f} GB Parquet -> torch batches ({ing['pairs']} interleaved pairs, "
    f"medians) | {ours['rows_per_s'] / 1e6:.2f} M rows/s | `iter_batches` + `from_numpy`: {base['rows_per_s'] / 1e6:.2f} M rows/s "
    f"| {ours['rate_ratio']['median']:.2f} (pairs {rng(ours['rate_ratio'], lambda v: f'{v:.2f}')}) | >= 0.8 | {yn(ing['met'])} |")
s = res["stream"]
ours, base = row(s, "raysweep stream loader"), row(s, "pyarrow dataset.to_batches + to_matrix")
new["stream loader, "] = (
    f"| stream loader, {s['data_gb']:.2f} GB local Parquet, {s['threads']} threads ({s['pairs']} interleaved pairs, medians) "
    f"| {ours['rows_per_s'] / 1e6:.2f} M rows/s ({ours['gb_per_s']:.2f} GB/s) | pyarrow `dataset().to_batches` + the same float32 "
    f"matrix, {s['threads']} threads: {base['rows_per_s'] / 1e6:.2f} M rows/s | {ours['rate_ratio']['median']:.2f} "
    f"(pairs {rng(ours['rate_ratio'], lambda v: f'{v:.2f}')}) | >= 0.9 | {yn(s['met'])} |")
t = res["tracking"]
ours, base = row(t, "raysweep MLflow logging"), row(t, "no tracking")
c = ours["cost_pct"]
new["MLflow logging cost"] = (
    f"| MLflow logging cost (10-epoch trial; {t['pairs']} interleaved pairs, medians) | {ours['training_s']:.2f} s "
    f"| no tracking {base['training_s']:.2f} s | {c['median']:+.1f} % (pairs {c['min']:+.0f} to {c['max']:+.0f} %) "
    f"| <= 2 % | {yn(t['met'])} |")
se = res["search"]
tasks = list(dict.fromkeys(x["task"] for x in se["rows"]))
comp = list(se["comparisons"].values())


def epochs(x):
    v = x["median_epochs_to_target"]
    return f"not reached (in {x['reached']}/{x['seeds']} seeds)" if v is None else f"{v:g} epochs"


def factor(v):
    return "undecided" if v is None else f"{v:.2f}x"


def verdict(c):
    return "not decided" if c["met"] is None else yn(c["met"])


new["search: epochs to a fixed val_loss target"] = (
    f"| search: epochs to a fixed val_loss target, the default search vs random search without early stopping, at equal "
    f"epochs ({len(tasks)} tasks, {se['epochs']} epochs each, {se['seeds']} seeds; medians) | "
    + "; ".join(f"{t} (<= {row_of['target_val_loss']:g}): {epochs(row_of)} vs "
                f"{epochs(next(x for x in se['rows'] if x['task'] == t and x['name'] == se['baseline']))}"
                f", {factor(row_of['fewer_epochs_factor'])}"
                for t in tasks for row_of in [next(x for x in se['rows'] if x['task'] == t and x['name'] == 'raysweep default')])
    + f" | random, no early stopping | {factor(se['overall_fewer_epochs_factor'])} overall (geometric mean of the tasks) "
    f"| >= 3x | {verdict(comp[0])} |")
new["search: best val_loss"] = (
    f"| search: best val_loss in {se['epochs']} epochs, the default search vs random search and vs Optuna alone "
    f"(TPE + `HyperbandPruner` in `study.optimize`, no Ray) ({se['seeds']} seeds; medians) | "
    + "; ".join(f"{t}: {comp[1]['per_task'][t]['default']:.4f}" for t in tasks)
    + " | random: " + "; ".join(f"{comp[1]['per_task'][t][se['baseline']]:.4f}" for t in tasks)
    + "; Optuna alone: " + "; ".join(f"{comp[2]['per_task'][t]['Optuna alone']:.4f}" for t in tasks)
    + f" | | lower than random on every task; as low as Optuna alone on every task | {verdict(comp[1])}; {verdict(comp[2])} |")
mo = res["search_mo"]
mo_rows = {x["name"]: x for x in mo["rows"]}
base, fewer, equal = (mo_rows[n] for n in ("no early stopping (FIFO)", "MultiObjectiveASHA",
                                           "MultiObjectiveASHA, equal epochs"))
mo_verdicts = [fewer["median_hypervolume_ratio"] >= 0.95 and fewer["median_epochs_ratio"] <= 0.5,
               equal["median_hypervolume_ratio"] >= 1.0]  # (benchmarks/search_mo.py's mo_comparisons)
new["two objectives"] = (
    f"| two objectives (val_loss, params_count; val_accuracy >= 0.9), MultiObjectiveASHA (grace {mo['grace_period']}, "
    f"factor {mo['reduction_factor']:g}) vs no early stopping ({mo['seeds']} seeds) | hypervolume "
    f"{fewer['median_hypervolume_fraction']:.3g} of the reference box, {fewer['median_total_epochs']:g} epochs; at equal "
    f"epochs (new configurations until {base['median_total_epochs']:g} are spent): {equal['median_hypervolume_fraction']:.3g} "
    f"(medians) | {base['median_hypervolume_fraction']:.3g}, {base['median_total_epochs']:g} epochs | hypervolume "
    f"{fewer['median_hypervolume_ratio']:.3g}x at {fewer['median_epochs_ratio']:.2g}x the epochs; "
    f"{equal['median_hypervolume_ratio']:.3g}x at equal epochs | >= 0.95x at <= 0.5x; >= 1x at equal epochs "
    f"| {'; '.join('not decided' if v is None else yn(v) for v in mo_verdicts)} |")

for path in ("README.md", "docs/benchmarks.md"):
    text = (repo / path).read_text()
    lines = text.split("\n")
    for key, value in new.items():
        hits = [i for i, line in enumerate(lines) if line.startswith("| " + key)]
        assert len(hits) == 1, (path, key, hits)
        lines[hits[0]] = value
    (repo / path).write_text("\n".join(lines))
    print(path, "updated")
for v in new.values():
    print(v)
