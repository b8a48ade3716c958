"""fingerprint: data_fingerprint's footer mode on 1,000 small files, local and on S3."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Bench, resolved, scratch_dir, stream_size
from benchmarks.core import md_table
from benchmarks.entries import ENTRIES


def fingerprint_table(r: dict[str, Any]) -> list[str]:
    return [*md_table(["files at", "mode", "files", "fingerprint s", "ms/file", "resolve_data s"],
                      [[x["where"], x["mode"], x["files"], x.get("seconds", "failed"),
                        x.get("ms_per_file", x.get("error", "")), x["resolve_s"]] for x in r["rows"]]),
            f"{r['files']} training files of {r['rows_per_file']} rows x 8 float32 + label, and 1 validation file; "
            "the S3 files on the SeaweedFS server (127.0.0.1). Times: data_fingerprint(resolve_data(...), mode) "
            f"alone (resolve_data timed apart, once); medians of {r['repeats']}.", ""]


def fingerprint_met(r: dict[str, Any]) -> bool | None:
    footer = [x for x in r["rows"] if x["mode"] == "footer"]
    if any("error" in x for x in footer):
        return False
    if r["files"] < 1000:
        return None
    return all(x["seconds"] <= 10 for x in footer)


@ENTRIES.register(
    "fingerprint",
    method=(
        "not interleaved pairs: medians of --repeats against a fixed bound in seconds"
    ), target="footer mode on 1,000 files <= 10 s, local and S3", table=fingerprint_table,
                  met=fingerprint_met)
def bench_fingerprint(bench: Bench, rows_per_file: int = 64) -> dict[str, Any]:
    import shutil

    from benchmarks.data_support import s3_environment, write_small_files
    from raysweep.tracking.record import data_fingerprint
    from tests.support.seaweed import S3Server

    repeats, count = bench.args.repeats, stream_size(bench, "fingerprint_files")
    tmp = Path(scratch_dir(prefix="bench-fingerprint-"))
    try:
        bench.stage("write the files")
        write_small_files(tmp / "data", count, rows_per_file)
        bench.stage("start the S3 server and upload")
        with S3Server(tmp / "s3", stop_timeout=2) as server:
            server.upload(tmp / "data", "bench/data")
            cases = [("local", "footer"), ("local", "full"), ("S3", "footer")]
            found: dict[str, Any] = {}
            resolve_s: dict[str, float] = {}
            for where, root in (("local", str(tmp / "data")), ("S3", "s3://bench/data")):
                with s3_environment(server):
                    started = time.perf_counter()
                    found[where] = resolved(root)
                    resolve_s[where] = time.perf_counter() - started
            seconds: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
            errors: dict[tuple[str, str], str] = {}
            for _ in range(repeats):
                for where, mode in cases:
                    if (where, mode) in errors:
                        continue
                    bench.stage(f"{mode} mode, {where}")
                    with s3_environment(server):
                        started = time.perf_counter()
                        try:
                            fingerprint = data_fingerprint(found[where], mode)
                        except Exception as exc:  # report it in the table; the other cases still run
                            errors[(where, mode)] = f"{type(exc).__name__}: {str(exc)[:200]}"
                            continue
                        seconds[(where, mode)].append(time.perf_counter() - started)
                    assert isinstance(fingerprint, dict)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = count + 1
    rows = []
    for (where, mode), v in seconds.items():
        row: dict[str, Any] = {"where": where, "mode": mode, "files": total, "resolve_s": resolve_s[where]}
        if (where, mode) in errors:
            row["error"] = errors[(where, mode)]
        else:
            row.update(seconds=statistics.median(v), ms_per_file=statistics.median(v) / total * 1e3,
                       samples=[round(s, 3) for s in v])
        rows.append(row)
    return {"entry": "fingerprint", "baseline": "full mode (content hashes), local", "rows": rows,
            "files": count, "rows_per_file": rows_per_file, "repeats": repeats, "quick": bench.args.quick}


