"""``dashboard.html``: the BI views as charts, one section per model version, in one
self-contained file (inline SVG and CSS, no script, nothing fetched), for the embedded
default where there is no Grafana. Built from the views (``warehouse.views``) through
the :class:`~warehouse.base.Warehouse` interface, so it shows what a BI tool would.

Every number on the page is read from the warehouse when the page is written; a chart
without rows says "no data".
"""

from __future__ import annotations

import html
import os
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warehouse.base import Warehouse
from warehouse.svg import Point, line_chart

STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "section{border-top:2px solid #ddd;margin-top:1.5em}"
    ".charts{display:flex;flex-wrap:wrap;gap:1em}"
    "figure{margin:0}figcaption{font-weight:bold;margin:.4em 0}"
    ".legend{font-size:12px}.key{margin-right:1em}.nodata{color:#b00020}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
    ".drift{color:#b00020;font-weight:bold}"
)


def _models(wh: Warehouse) -> list[tuple[str, str]]:
    s = wh.schema
    rows = wh.query(
        f"SELECT model_name, model_version FROM {s}.v_traffic_hourly "
        f"UNION SELECT model_name, model_version FROM {s}.v_feature_drift "
        f"UNION SELECT model_name, model_version FROM {s}.v_accuracy_daily ORDER BY 1, 2"
    )
    return [(str(m), str(v)) for m, v in rows]


def _series(rows: list[tuple[Any, ...]], names: list[str]) -> dict[str, list[Point]]:
    """Rows (time, v1, v2, ...) → one series per value column."""
    return {n: [(r[0], r[i + 1]) for r in rows] for i, n in enumerate(names)}


def _grouped(rows: list[tuple[Any, ...]]) -> dict[str, list[Point]]:
    """Rows (series name, time, value) → one series per name."""
    out: dict[str, list[Point]] = defaultdict(list)
    for name, t, v in rows:
        out[str(name)].append((t, v))
    return dict(out)


def model_section(wh: Warehouse, model: str, version: str) -> str:
    s, key = wh.schema, (model, version)
    where = "WHERE model_name = %s AND model_version = %s"
    traffic = wh.query(
        f"SELECT hour, events, errors, error_rate FROM {s}.v_traffic_hourly {where} ORDER BY 1", key
    )
    latency = wh.query(
        "SELECT hour, http_latency_p50_ms, http_latency_p99_ms, model_latency_p50_ms, model_latency_p99_ms "
        f"FROM {s}.v_latency_hourly {where} ORDER BY 1",
        key,
    )
    mix = wh.query(f"SELECT prediction, hour, share FROM {s}.v_prediction_mix_hourly {where} ORDER BY 2", key)
    drift = wh.query(f"SELECT feature, run_time, score FROM {s}.v_feature_drift {where} ORDER BY 2", key)
    accuracy = wh.query(
        f"SELECT day, realized_accuracy, estimated_accuracy FROM {s}.v_accuracy_daily {where} ORDER BY 1", key
    )
    events = sum(int(r[1] or 0) for r in traffic)
    errors = sum(int(r[2] or 0) for r in traffic)
    e = html.escape
    summary = f"{events:,} events, {errors:,} errors" + (f" ({errors / events:.2%})" if events else "")
    charts = [
        line_chart("Traffic per hour", _series([r[:3] for r in traffic], ["events", "errors"])),
        line_chart("Error rate per hour", _series([(r[0], r[3]) for r in traffic], ["error rate"])),
        line_chart(
            "Latency per hour",
            _series(latency, ["HTTP p50", "HTTP p99", "model p50", "model p99"]),
            unit=" ms",
        ),
        line_chart("Prediction mix (share of the hour)", _grouped(mix)),
        line_chart("Drift score per feature, per drift run", _grouped(drift)),
        line_chart("Accuracy per day", _series(accuracy, ["realized", "estimated"])),
    ]
    return (
        f"<section id='{e(model)}-{e(version)}'><h2>{e(model)} version {e(version)}</h2>"
        f"<p class='summary'>{summary}</p>{_latest_drift(wh, model, version)}"
        f"<div class='charts'>{''.join(charts)}</div></section>"
    )


def _latest_drift(wh: Warehouse, model: str, version: str) -> str:
    s = wh.schema
    rows = wh.query(
        "SELECT run_time, feature, method, score, threshold, drifted, run_verdict_drift, report_url "
        f"FROM {s}.v_feature_drift WHERE model_name = %s AND model_version = %s AND run_time = "
        f"(SELECT max(run_time) FROM {s}.v_feature_drift WHERE model_name = %s AND model_version = %s) "
        "ORDER BY feature",
        (model, version, model, version),
    )
    if not rows:
        return "<p class='nodata'>no drift run yet</p>"
    e = html.escape
    verdict = "<span class='drift'>DRIFT</span>" if rows[0][6] else "no drift"
    link = f" <a href='{e(str(rows[0][7]))}'>report</a>" if rows[0][7] else ""
    body = "".join(
        f"<tr><td>{e(str(f))}</td><td>{e(str(m))}</td><td>{sc:.4g}</td><td>{th:.4g}</td>"
        f"<td{' class=drift' if d else ''}>{'drifted' if d else 'ok'}</td></tr>"
        for _, f, m, sc, th, d, _, _ in rows
    )
    return (
        f"<p>Latest drift run {e(rows[0][0].isoformat())}: {verdict}{link}</p>"
        "<table class='latest-drift'><tr><th>column</th><th>method</th><th>score</th><th>threshold</th>"
        f"<th>verdict</th></tr>{body}</table>"
    )


def render(wh: Warehouse, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    models = _models(wh)
    sections = [model_section(wh, m, v) for m, v in models] or ["<p class='nodata'>no data loaded yet</p>"]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>inferstream dashboard</title>"
        f"<style>{STYLE}</style></head><body><h1>inferstream dashboard</h1>"
        f"<p>Written {now:%Y-%m-%d %H:%M:%S} UTC from the warehouse views (schema {html.escape(wh.schema)}); "
        "times are UTC. <a href='index.html'>Drift reports</a></p>" + "".join(sections) + "</body></html>"
    )


def write(wh: Warehouse, path: Path) -> Path:
    """Write the dashboard to ``path`` atomically (a reader never sees half a page)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(wh), encoding="utf-8")
    os.replace(tmp, path)
    return path
