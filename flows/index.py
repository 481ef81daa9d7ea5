"""``reports/index.html``: every drift run, newest first, with verdict, window, row
counts and links. Rebuilt from the runs' ``summary.json`` files each time, so it never
disagrees with what is on disk."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import orjson

SUMMARY = "summary.json"


def runs(reports_root: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for f in reports_root.glob(f"*/*/{SUMMARY}"):
        try:
            out.append((f.parent, orjson.loads(f.read_bytes())))
        except orjson.JSONDecodeError:
            continue  # a run being written; the next refresh lists it
    out.sort(key=lambda x: str(x[1].get("run_time", "")), reverse=True)
    return out


def refresh(reports_root: Path) -> Path:
    rows = []
    for run_dir, s in runs(reports_root):
        rel = run_dir.relative_to(reports_root).as_posix()
        v = s["verdict"]
        alert = v["drift"] or v.get("quality_alert")  # an estimated quality drop alerts without drift
        label = "DRIFT" if v["drift"] else "QUALITY DROP" if alert else "no drift"
        colour = "#b00020" if alert else "#1b5e20"
        e = html.escape
        rows.append(
            f"<tr><td>{e(str(s['run_time']))}</td><td>{e(s['model'])} v{e(str(s['version']))}</td>"
            f"<td style='color:{colour}'><b>{label}</b> {e(v['reason'])}</td>"
            f"<td>{e(s['window']['label'])}</td><td>{s['current_rows']}</td><td>{s['reference']['rows']}</td>"
            f"<td><a href='{e(rel)}/report.html'>report</a> · "
            f"<a href='{e(rel)}/report.json'>json</a></td></tr>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>inferstream drift reports</title></head>"
        "<body style='font-family:sans-serif'><h1>Drift reports</h1>"
        "<table id='runs' border=1 cellpadding=4><tr><th>run (UTC)</th><th>model</th><th>verdict</th>"
        "<th>window</th><th>current rows</th><th>reference rows</th><th>links</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    reports_root.mkdir(parents=True, exist_ok=True)
    path = reports_root / "index.html"
    tmp = path.with_name(".index.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
