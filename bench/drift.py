"""Drift on big windows: Evidently on the full frames beside the drift flow's path.

    PYTHONPATH=. .venv/bin/python bench/drift.py [--sizes 200000,1000000] [--sample 20000]

A 50k-row reference against 200k and 1M current rows x 30 number features: 10 without
drift, 10 with clear drift, 10 shifted to sit near the default threshold (normed
Wasserstein 0.1), where a careless approximation would flip verdicts. Each measurement
runs in its own process (peak RSS is per process, so neither counts the other's) on the
same seeded data, generated in that process:

    evidently  Report([DataDriftPreset()]) on the full frames, default tests, HTML saved
    flow       the drift flow's stages (flows.drift): per-column tests on all rows
               (monitoring.stats), the timeline and a stratified sample while the window
               is held; then the window is dropped and its memory returned
               (drift_calc.release_freed_memory) before Evidently is imported to draw the
               charts from the samples; report.html written

Seconds exclude imports on both paths (Evidently's own imports for ``evidently``; the
flow imports Evidently mid-run, after the window is dropped, and that import's seconds
are shown apart). Prints seconds, peak RSS (whole process, data and imports included;
the RSS right after the data is made is data_mb), HTML size and whether the 30
per-feature verdicts agree, then a last line
``speedup_1m=... verdicts_agree=... peak_rss_mb=... html_mb=...`` (flow's figures).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

N_REF = 50_000
N_FEATURES = 30
SEED = 7


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak since start or the last reset), Linux."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024
    except (OSError, StopIteration):
        return float("nan")


def _reset_peak() -> bool:
    """Restart the kernel's peak-RSS count (``VmHWM``), to measure one stage on its own."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def make_frame(n: int, current: bool, seed: int) -> pl.DataFrame:
    """Column by column, so generating does not double the frame in memory."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pl.Series] = {}
    for i in range(N_FEATURES):
        base = rng.lognormal(0, 0.5, n) if i % 3 == 2 else rng.normal(0, 1, n)
        if current and 10 <= i < 20:
            base = base + 0.3 * (1 + (i % 3 == 2) * -0.5) + (0.1 if i % 2 else 0)  # clear drift
        elif current and i >= 20:
            # near the 0.1 threshold: shifts of 0.090 .. 0.108 standard deviations
            sd = 0.5 * np.exp(0.125) * np.sqrt(np.exp(0.25) - 1) if i % 3 == 2 else 1.0
            base = base + (0.090 + 0.002 * (i - 20)) * sd
        cols[f"f{i:02d}"] = pl.Series(f"f{i:02d}", base)  # numpy buffer reused, not copied
    df = pl.DataFrame(cols)
    if current:
        t0 = datetime(2026, 3, 1, tzinfo=UTC)
        df = df.with_columns(
            pl.datetime_range(
                t0, t0 + timedelta(days=1), interval=timedelta(days=1) / n, eager=True, time_zone="UTC"
            )
            .head(n)
            .alias("event_time"),
            pl.Series("prediction", np.where(rng.random(n) < 0.3, "1", "0")),
        )
    else:
        df = df.with_columns(pl.Series("prediction", np.where(rng.random(n) < 0.3, "1", "0")))
    return df


def features() -> list[str]:
    return [f"f{i:02d}" for i in range(N_FEATURES)]


def run_evidently(rows: int, out: Path) -> dict:
    ref, cur = load(rows)
    data_mb = _rss_mb()
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    t = time.perf_counter()
    definition = DataDefinition(numerical_columns=features())
    snap = Report([DataDriftPreset(columns=features())]).run(
        Dataset.from_pandas(cur.select(features()).to_pandas(), data_definition=definition),
        Dataset.from_pandas(ref.select(features()).to_pandas(), data_definition=definition),
    )
    snap.save_html(str(out))
    secs = time.perf_counter() - t
    verdicts = {}
    for m in snap.dict()["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            p_value = "p_value" in str(cfg.get("method"))
            v, thr = float(m["value"]), float(cfg["threshold"])
            verdicts[cfg["column"]] = (v < thr) if p_value else (v >= thr)
    return {
        "seconds": secs,
        "data_mb": data_mb,
        "verdicts": verdicts,
        "methods": sorted(
            {
                str(m.get("config", {}).get("method"))
                for m in snap.dict()["metrics"]
                if m.get("config", {}).get("column")
            }
        ),
    }


def run_flow(rows: int, out: Path, sample: int) -> dict:
    """The drift flow's stages (``flows.drift``): per-column tests, timeline and samples
    while the window is held (``compute``/``summarise``), then the window is dropped and
    Evidently draws the charts from the samples (``render``)."""
    ref, cur = load(rows)
    data_mb = _rss_mb()
    from flows import drift_calc, report
    from flows.reference import ColumnSpec, frame_stats
    from flows.summary import DriftSummary

    specs = [ColumnSpec(f, "num") for f in features()]
    t = time.perf_counter()
    ref_stats = frame_stats(ref, specs)  # computed once per artifact and cached by the flow
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    results = drift_calc.compare(ref_stats, cur, specs)
    verdict = drift_calc.verdict(results, specs, 0.5)
    tl = drift_calc.timeline(ref_stats, cur, specs, results)
    t_stats = time.perf_counter() - t
    cur_s = drift_calc.stratified_sample(cur, sample)
    ref_s = ref.sample(n=min(sample, ref.height), seed=0)
    ref_rows, cur_rows = ref.height, cur.height
    del ref, cur, ref_stats  # as the flow drops its window before drawing the charts
    drift_calc.release_freed_memory()
    window_mb, dropped_mb = _rss_mb(), _status_mb("VmRSS")
    measured_apart = _reset_peak()
    t_imp = time.perf_counter()
    # imported here, outside the flow's timing, as for Evidently alone
    import evidently.metrics
    import evidently.presets  # noqa: F401
    import sklearn.exceptions  # noqa: F401

    t_imp = time.perf_counter() - t_imp
    snap, _ = report.evidently_snapshot(ref_s, cur_s, specs, {r.column: r.method for r in results})
    summary = {
        "run_id": "bench",
        "run_time": datetime.now(UTC).isoformat(),
        "model": "bench",
        "version": "1",
        "window": {"label": "bench"},
        "reference": {"name": "bench", "rows": ref_rows},
        "current_rows": cur_rows,
        "sample": {"note": f"a stratified sample of {cur_s.height} of {cur_rows} current rows"},
        "verdict": {"drift": verdict.drift, "reason": verdict.reason()},
        "columns": [{**r.__dict__, "role": "feature"} for r in results],
        "timeline": [
            {"start": r.start.isoformat(), "rows": r.rows, "scores": r.scores, "drifted": r.drifted}
            for r in tl
        ],
        "drift_starts": {},
        "quality": {},
    }
    html, _ = report.write_run(out.parent, DriftSummary.model_validate(summary), snap, None)
    secs = time.perf_counter() - t - t_imp
    charts_mb = _status_mb("VmHWM") if measured_apart else float("nan")
    return {
        "seconds": secs,
        "ref_stats_seconds": t_ref,
        "stats_seconds": t_stats,
        "import_seconds": t_imp,
        "window_peak_mb": window_mb,
        "after_drop_mb": dropped_mb,
        "charts_peak_mb": charts_mb,
        "verdicts": {r.column: r.drifted for r in results},
        "exact_fallbacks": sum(r.exact for r in results),
        "data_mb": data_mb,
        "html": str(html),
    }


def load(rows: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_frame(N_REF, False, SEED), make_frame(rows, True, SEED + 1)


def one(kind: str, rows: int, sample: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run" / "report.html"
        out.parent.mkdir()
        res = run_evidently(rows, out) if kind == "evidently" else run_flow(rows, out, sample)
        res["html_mb"] = out.stat().st_size / 1e6
    res.pop("html", None)
    # the kernel's peak count restarted for the chart stage: the run's peak is the larger
    peak = max(_rss_mb(), res.get("window_peak_mb", 0.0), res.get("charts_peak_mb", 0.0))
    res.update(kind=kind, rows=rows, peak_rss_mb=peak)
    print(json.dumps(res))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="200000,1000000")
    ap.add_argument("--sample", type=int, default=2_000)  # the flow's default
    ap.add_argument("--one", choices=["evidently", "flow"])
    ap.add_argument("--rows", type=int)
    args = ap.parse_args()
    if args.one:
        one(args.one, args.rows, args.sample)
        return 0
    results = {}
    for rows in [int(s) for s in args.sizes.split(",")]:
        for kind in ("evidently", "flow"):
            out = subprocess.run(
                [sys.executable, __file__, "--one", kind, "--rows", str(rows), "--sample", str(args.sample)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[(kind, rows)] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"reference {N_REF} rows x {N_FEATURES} features; "
        f"Evidently sample for the flow's charts: {args.sample}; each path in its own process; "
        "seconds exclude imports on both paths"
    )
    print(
        f"{'rows':>9} {'path':>9} {'seconds':>8} {'peak_rss_mb':>11} {'data_mb':>8} "
        f"{'html_mb':>8} {'drifted':>8} {'agree':>6}"
    )
    agree_all = True
    for rows in sorted({r for _, r in results}):
        ev = results[("evidently", rows)]
        for kind in ("evidently", "flow"):
            r = results[(kind, rows)]
            agree = r["verdicts"] == ev["verdicts"]
            agree_all &= agree
            print(
                f"{rows:>9} {kind:>9} {r['seconds']:>8.2f} {r['peak_rss_mb']:>11.0f} {r['data_mb']:>8.0f} "
                f"{r['html_mb']:>8.2f} {sum(r['verdicts'].values()):>8} {str(agree):>6}"
            )
        fl = results[("flow", rows)]
        print(
            f"{'':>9} flow detail: per-column stats {fl['stats_seconds']:.2f} s, reference stats "
            f"{fl['ref_stats_seconds']:.2f} s (cached between runs), "
            f"exact recomputations {fl['exact_fallbacks']}/30; "
            f"Evidently tests used: {', '.join(ev['methods'])}"
        )
        print(
            f"{'':>9} flow memory: peak {fl['window_peak_mb']:.0f} MB while the window is held, "
            f"{fl['after_drop_mb']:.0f} MB resident once it is dropped, "
            f"peak {fl['charts_peak_mb']:.0f} MB while Evidently (imported then: "
            f"{fl['import_seconds']:.1f} s, not in seconds) draws the charts"
        )
    big = max(r for _, r in results)
    ev, fl = results[("evidently", big)], results[("flow", big)]
    tag = "1m" if big == 1_000_000 else str(big)
    print(
        f"speedup_{tag}={ev['seconds'] / fl['seconds']:.1f} verdicts_agree={agree_all} "
        f"peak_rss_mb={fl['peak_rss_mb']:.0f} "
        f"html_mb={max(results[('flow', r)]['html_mb'] for _, r in results):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
