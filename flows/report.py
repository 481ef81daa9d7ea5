"""A drift run's report: one verdict (the run's, on all rows) with its rule in words,
inline SVG charts, the per-column table, the quality numbers, then Evidently's
distribution charts drawn from a sample and labelled as such; plus the same content
as JSON.

    reports/<model>/<run time>/report.html   self-contained, opens offline
    reports/<model>/<run time>/report.json   summary + Evidently's snapshot dicts
    reports/<model>/<run time>/summary.json  the summary alone (the index reads it)

Evidently's page carries a 3.5 MB script bundle and its plot data; writing one page per
Evidently report (the old way) inlined the bundle twice, and an ``as_iframe`` page sized
its iframe before the frame existed (the quality section was cut at 150 px). Here both
Evidently dashboards are drawn into the one page, without iframes, from one copy of the
bundle; bundle and plot data are stored gzip-compressed (base64) and inflated by the
browser's own ``DecompressionStream``, which keeps a report under 4 MB.

The page is written here; its summary section is ``flows.report_summary`` and its
Evidently sections ``flows.report_evidently``.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import orjson

from flows.outcome import LABELS
from flows.report_evidently import (
    EVIDENTLY_LIB_ID,
    LOADER,
    dashboard,
    evidently_lib,
    evidently_section,
    evidently_snapshot,
    packed,
)
from flows.report_summary import summary_html, window_text
from flows.summary import SUMMARY_FILE, DriftSummary

__all__ = ["evidently_snapshot", "summary_html", "window_text", "write_empty_run", "write_run"]

_STYLE = (
    "<style>body{font-family:sans-serif;margin:0}#inferstream-summary{margin:16px}"
    "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 6px;text-align:left}"
    ".charts{display:flex;flex-wrap:wrap;gap:8px;max-width:1800px}"
    ".charts svg{border:1px solid #ddd;background:#fff}"
    ".evidently h2{margin:16px}.evidently .note{margin:0 16px;color:#444}</style>"
)


def _page(title: str, body: str, head: str = "") -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"{_STYLE}{head}</head><body>{body}</body></html>"
    )


def _title(summary: DriftSummary) -> str:
    label = LABELS[summary.result()]
    return f"{label}: {summary.model} v{summary.version} {summary.window.label or ''}"


def write_empty_run(run_dir: Path, summary: DriftSummary) -> tuple[Path, Path]:
    """A run whose window held no rows: the summary alone (nothing to chart)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    page = _page(_title(summary), summary_html(summary))
    out_html, out_json = run_dir / "report.html", run_dir / "report.json"
    _atomic(out_html, page.encode())
    doc = summary.to_json()
    _atomic(run_dir / SUMMARY_FILE, _dumps(doc))
    _atomic(out_json, _dumps(doc))
    return out_html, out_json


def write_run(run_dir: Path, summary: DriftSummary, drift_snap: Any, quality_snap: Any) -> tuple[Path, Path]:
    """Write report.html, report.json and summary.json atomically (temp name, then rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    sample = summary.sample
    style, drift_data = dashboard(drift_snap)
    if (
        sample is not None
        and sample.current_rows == summary.current_rows
        and sample.reference_rows == summary.reference.rows
    ):
        title = "Distributions (Evidently, all rows)"
        note = (
            "Same rows, tests and thresholds as the table above; its dataset line counts the features "
            "only (the prediction rule is stated at the top), and the verdict is the one at the top."
        )
    else:
        title = "Distributions (Evidently, sample-based view)"
        drawn_from = sample.note if sample and sample.note is not None else "a sample"
        note = (
            f"Drawn from {drawn_from}: its scores and 'detected' labels are the "
            "sample's and may differ from the all-rows ones above; the verdict is the one at the top."
        )
    sections = [evidently_section("drift", title, note, drift_data)]
    if quality_snap is not None:
        sections.append(
            evidently_section(
                "quality",
                "Classification quality (Evidently)",
                "On the labelled predictions of the window (ground truth from feedback) and the reference.",
                dashboard(quality_snap)[1],
            )
        )
    body = summary_html(summary) + "".join(sections) + packed(EVIDENTLY_LIB_ID, evidently_lib()) + LOADER
    page = _page(_title(summary), body, head=style)
    summary_doc = summary.to_json()
    doc = {
        **summary_doc,
        "evidently": drift_snap.dict(),
        "evidently_quality": quality_snap.dict() if quality_snap else None,
    }
    out_html, out_json = run_dir / "report.html", run_dir / "report.json"
    _atomic(out_html, page.encode())
    _atomic(run_dir / SUMMARY_FILE, _dumps(summary_doc))
    _atomic(out_json, _dumps(doc))
    return out_html, out_json


def _dumps(doc: Any) -> bytes:
    opts = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(doc, option=opts, default=str)


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
