"""What a drift run leaves in Prefect: four artifacts under keys stable per model and
version (so the UI's Artifacts page keeps their history run after run), and one event
an automation can trigger on.

    drift-<model>-v<version>-summary   markdown: verdict, drifted columns, window, rows, reference
    drift-<model>-v<version>-report    link to report.html (INFERSTREAM_REPORTS_BASE_URL, else a file
                                       or s3:// URL)
    drift-<model>-v<version>-columns   table: column, role, method, score, threshold, verdict
    drift-<model>-v<version>-quality   table: per slice, estimated (CBPE) vs realized quality and
                                       the metrics alerting; or one row saying why nothing was estimated

    event inferstream.drift.detected | inferstream.drift.none | inferstream.drift.no-data
    resource inferstream.model.<model>.v<version>

The markdown and table builders are pure (tested through them); ``publish`` needs a run
context and a Prefect API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from flows.outcome import EVENTS, LABELS, Outcome
from flows.performance import ALERT_METRICS
from flows.report import window_text
from flows.summary import DriftSummary


def key(model: str, version: str, kind: str) -> str:
    """Prefect keys allow lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"drift-{model}-v{version}".lower()).strip("-")
    return f"{slug}-{kind}"


def report_url(html: Path, reports_root: Path, base_url: str | None, store_url: str | None = None) -> str:
    """``<base_url>/<model>/<run>/report.html`` when a base URL is set (a web server or
    bucket serving the reports folder), else the same under ``store_url`` (the s3:// URL
    reports are published to), else the file's own URL."""
    rel = html.resolve().relative_to(reports_root.resolve()).as_posix()
    if base_url or store_url:
        return f"{(base_url or store_url or '').rstrip('/')}/{rel}"
    return html.resolve().as_uri()


def _md(text: object) -> str:
    return re.sub(r"([\\`*_{}\[\]<>|])", r"\\\1", str(text))


def summary_markdown(summary: DriftSummary, url: str) -> str:
    outcome = summary.result()
    drifted = summary.drifted_columns
    lines = [
        f"# {LABELS[outcome]}: {_md(summary.model)} v{_md(summary.version)}",
        "",
        f"**Verdict:** {LABELS[outcome]} – {_md(summary.verdict.reason)}",
        "",
        f"- **Window:** {_md(window_text(summary.window))}",
        f"- **Rows:** {summary.current_rows} current (all rows tested)",
        f"- **Reference:** {_md(summary.reference.name)} ({summary.reference.rows} rows)",
        "- **Drifted columns:** "
        + (", ".join(f"{_md(c.column)} ({c.method} {c.score:.4g})" for c in drifted) or "none"),
        f"- **Report:** [{_md(url)}]({url})",
    ]
    return "\n".join(lines) + "\n"


def columns_table(summary: DriftSummary) -> list[dict[str, Any]]:
    return [
        {
            "column": c.column,
            "role": c.role,
            "method": c.method,
            "score": round(float(c.score), 6),
            "threshold": float(c.threshold),
            "verdict": "DRIFT" if c.drifted else "ok",
        }
        for c in summary.columns
    ]


def quality_table(summary: DriftSummary) -> list[dict[str, Any]]:
    """One row per time slice of the window: its rows and labelled rows, each metric's
    estimate and realized value (None until labels land) and the metrics whose estimate
    left the reference thresholds there (``alerts``: those the run alerts on). Without an
    estimate, one row with the reason."""
    perf = summary.performance or {}
    if not perf.get("available"):
        return [{"estimated": "no", "reason": perf.get("reason", "not estimated in this run")}]
    rows = []
    for s in perf["slices"]:
        row: dict[str, Any] = {
            "slice": f"{s['start']} – {s['end']}",
            "rows": s["rows"],
            "labelled": s["labelled"],
        }
        for m, e in s["metrics"].items():
            row[f"{m} estimated"] = None if e["value"] is None else round(float(e["value"]), 4)
            row[f"{m} realized"] = None if e["realized"] is None else round(float(e["realized"]), 4)
        outside = [m for m, e in s["metrics"].items() if e["alert"]]
        # the run's rule (flows.performance): only ROC AUC and accuracy alert; F1, precision
        # and recall on small slices are mostly noise, listed apart
        row["alerts"] = ", ".join(m for m in outside if m in ALERT_METRICS) or "none"
        row["others outside thresholds"] = ", ".join(m for m in outside if m not in ALERT_METRICS) or "none"
        rows.append(row)
    return rows


def event_payload(summary: DriftSummary, url: str) -> dict[str, Any]:
    outcome = summary.result()
    return {
        "outcome": outcome.value,
        "verdict": LABELS[outcome],
        "model": summary.model,
        "version": summary.version,
        "reason": summary.verdict.reason,
        "window": summary.window.model_dump(exclude_unset=True),
        "rows": summary.current_rows,
        "drifted_columns": [c.column for c in summary.drifted_columns],
        "report_url": url,
    }


def publish(summary: DriftSummary, url: str) -> Outcome:
    """Create the four artifacts and emit the outcome's event (in a flow run)."""
    model, version = summary.model, summary.version
    outcome = summary.result()
    create_markdown_artifact(
        summary_markdown(summary, url),
        key=key(model, version, "summary"),
        description=f"{LABELS[outcome]}: {model} v{version}, {window_text(summary.window)}",
    )
    create_link_artifact(url, link_text="drift report", key=key(model, version, "report"))
    if summary.columns:
        create_table_artifact(
            columns_table(summary),
            key=key(model, version, "columns"),
            description="per-column drift, all rows",
        )
    perf = summary.performance or {}
    create_table_artifact(
        quality_table(summary),
        key=key(model, version, "quality"),
        description=(
            f"estimated (CBPE, {perf.get('problem', '')}) vs realized quality per slice; "
            f"run alerts on: {', '.join(perf.get('alert_metrics') or []) or 'none'}"
            if perf.get("available")
            else "quality not estimated in this run"
        ),
    )
    emit_event(
        event=EVENTS[outcome],
        resource={
            "prefect.resource.id": f"inferstream.model.{model}.v{version}",
            "prefect.resource.name": f"{model} v{version}",
            "inferstream.model": model,
            "inferstream.version": version,
        },
        payload=event_payload(summary, url),
    )
    return outcome
