"""`raysweep reproduce RUN_ID`: re-run a recorded run from its record, compare metrics.

It refuses, naming what differs, when the input data's fingerprint or the versions
of the stack no longer match the record, unless `--force`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from raysweep import run
from raysweep.config.load import validate_spec
from raysweep.data.files import resolve_data
from raysweep.errors import UserInputError
from raysweep.report import SYSTEM
from raysweep.tracking.lookup import client, load_recorded
from raysweep.tracking.record import compare_data, compare_versions, data_fingerprint, versions

# Wall-clock figures and resource use (report.SYSTEM) differ run to run by nature;
# everything else must match.
NOT_COMPARED = {"samples_per_s", "startup_s", "epochs_completed"}

@dataclass
class Outcome:
    run_id: str
    new_run_id: str
    tolerance: float
    compared: int = 0
    max_rel_diff: float = 0.0
    mismatches: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def match(self) -> bool:
        return self.compared > 0 and not self.mismatches

    def summary(self) -> str:
        head = (f"reproduce {self.run_id} -> run {self.new_run_id}: {self.compared} metric values compared, "
                f"max relative difference {self.max_rel_diff:.3g} (tolerance {self.tolerance:g}): ")
        lines = [head + ("MATCH" if self.match else "DIFFERENT")]
        lines += [f"  differs: {m}" for m in self.mismatches[:20]]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def metric_history(run_id: str) -> dict[str, dict[int, float]]:
    mlflow = client()
    keys = [k for k in mlflow.get_run(run_id).data.metrics if k not in NOT_COMPARED and not k.startswith(SYSTEM)]
    return {k: {m.step: m.value for m in mlflow.get_metric_history(run_id, k)} for k in keys}


def compare_histories(old: dict[str, dict[int, float]], new: dict[str, dict[int, float]],
                      outcome: Outcome) -> None:
    """Every (metric, epoch) of the recorded run against the re-run (the recorded run
    may have stopped early: only its epochs are compared)."""
    for key, steps in sorted(old.items()):
        for step, value in sorted(steps.items()):
            if step not in new.get(key, {}):
                outcome.mismatches.append(f"{key} at epoch {step}: missing in the re-run")
                continue
            other = new[key][step]
            rel = abs(value - other) / max(abs(value), 1e-12)
            outcome.compared += 1
            outcome.max_rel_diff = max(outcome.max_rel_diff, rel)
            if rel > outcome.tolerance:
                outcome.mismatches.append(f"{key} at epoch {step}: {value!r} recorded, {other!r} now")


def reproduce(run_id: str, force: bool = False, tolerance: float = 1e-6, *, cluster: str | None = None,
              address: str | None = None) -> Outcome:
    """Check the record against today's data and versions, re-run, compare."""
    recorded = load_recorded(run_id)
    if recorded.kind == "sweep":
        raise UserInputError(
            f"run {run_id!r}: it is a sweep's parent run; reproduce one of its trials (`raysweep runs` lists them)")
    source = f"record of run {run_id}"
    # (the record names code: imported only from the project, raysweep or trusted packages)
    from raysweep.registry import check_trainer_name  # (lazy: it loads mlflow.pytorch)

    check_trainer_name(run_id, recorded.record["spec"].get("trainer"))
    space_function = recorded.record["spec"].get("space_function")
    if space_function:
        check_trainer_name(run_id, str(space_function).split(":", 1)[0])
    raw = {**recorded.record["spec"], "params": recorded.params}
    spec = validate_spec(raw, source)
    data = resolve_data(spec.data, source)
    # today's data in the recorded mode (a record from before modes holds sha256s: "full")
    mode = recorded.record["data"].get("mode", "full")
    problems = compare_data(recorded.record["data"], data_fingerprint(data, mode))
    problems += [f"version {v}" for v in compare_versions(recorded.record["versions"], versions())]
    if problems and not force:
        raise UserInputError(f"run {run_id!r}: refusing to reproduce: {'; '.join(problems)} (--force runs it anyway)")
    name = f"{recorded.run.info.run_name}-reproduce-{time.strftime('%Y%m%d-%H%M%S')}"
    new_run_id = run.train(spec, cluster=cluster, address=address, name=name, source=source).run_id
    outcome = Outcome(run_id, new_run_id, tolerance, warnings=[f"ran anyway: {p}" for p in problems])
    compare_histories(metric_history(run_id), metric_history(new_run_id), outcome)
    return outcome
