"""The drift report's "Estimated quality" section: per metric, the CBPE estimate over
the window's slices with its sampling-error band, the reference thresholds and the
realized value where labels have landed, as an inline SVG chart (no script, no network)
and a table."""

from __future__ import annotations

import html
from typing import Any

SECTION_ID = "inferstream-performance"
CHART_METRICS = ("roc_auc", "accuracy")
W, H, PAD = 640, 180, 36


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def _chart(metric: str, slices: list[dict[str, Any]]) -> str:
    pts = [
        (i, s["metrics"][metric]) for i, s in enumerate(slices) if s["metrics"][metric]["value"] is not None
    ]
    if not pts:
        return ""
    vals = [v for _, m in pts for v in (m["lower"], m["upper"], m["realized"]) if v is not None]
    vals += [t for t in (pts[0][1]["lower_threshold"], pts[0][1]["upper_threshold"]) if t is not None]
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.01, hi + 0.01
    n = max(len(slices) - 1, 1)

    def x(i: int) -> float:
        return PAD + (W - 2 * PAD) * i / n

    def y(v: float) -> float:
        return float(H - PAD / 2 - (H - PAD) * (v - lo) / (hi - lo))

    band = [f"{x(i):.1f},{y(m['upper']):.1f}" for i, m in pts]
    band += [f"{x(i):.1f},{y(m['lower']):.1f}" for i, m in reversed(pts)]
    est = " ".join(f"{x(i):.1f},{y(m['value']):.1f}" for i, m in pts)
    parts = [
        f"<svg class='perf-chart' data-metric='{metric}' width='{W}' height='{H}' "
        f"xmlns='http://www.w3.org/2000/svg' style='background:#fafafa'>",
        f"<polygon points='{' '.join(band)}' fill='#90caf9' opacity='0.4'><title>band</title></polygon>",
        f"<polyline points='{est}' fill='none' stroke='#1565c0' stroke-width='2'/>",
    ]
    for t in (pts[0][1]["lower_threshold"], pts[0][1]["upper_threshold"]):
        if t is not None:
            parts.append(
                f"<line x1='{PAD}' x2='{W - PAD}' y1='{y(t):.1f}' y2='{y(t):.1f}' stroke='#b00020' "
                f"stroke-dasharray='4 3'><title>threshold {t:.4f}</title></line>"
            )
    for i, m in pts:
        colour = "#b00020" if m["alert"] else "#1565c0"
        parts.append(
            f"<circle class='estimate' cx='{x(i):.1f}' cy='{y(m['value']):.1f}' r='3' fill='{colour}'/>"
        )
        if m["realized"] is not None:
            parts.append(
                f"<rect class='realized' x='{x(i) - 3:.1f}' y='{y(m['realized']) - 3:.1f}' width='6' "
                f"height='6' fill='#2e7d32'><title>realized {m['realized']:.4f}</title></rect>"
            )
    parts.append(f"<text x='4' y='12' font-size='11'>{html.escape(metric)}: {hi:.3f}</text>")
    parts.append(f"<text x='4' y='{H - 4}' font-size='11'>{lo:.3f}</text></svg>")
    return "".join(parts)


def performance_html(perf: dict[str, Any] | None) -> str:
    """The section, or "" when the summary has no estimate entry (older runs)."""
    if not perf:
        return ""
    head = "<h3>Estimated quality (CBPE, before labels)</h3>"
    if not perf.get("available"):
        return (
            f"<section id='{SECTION_ID}'>{head}<p>Not estimated: {html.escape(perf['reason'])}</p></section>"
        )
    slices = perf["slices"]
    mae = perf.get("mae") or {}
    alert = perf.get("alert")
    lead = (
        f"<p style='color:{'#b00020' if alert else '#1b5e20'}'><b>"
        + (f"ALERT: estimated {', '.join(perf['alert_metrics'])} left the reference band" if alert else "ok")
        + "</b>. Blue: estimate with its band (+-3 sampling errors); dashed red: the reference thresholds "
        "(mean +-3 std of reference chunks); green squares: realized quality where labels have landed.</p>"
    )
    charts = "".join(_chart(m, slices) for m in CHART_METRICS if m in perf["metrics"])
    metrics = perf["metrics"]
    rows = []
    for s in slices:
        cells = "".join(
            f"<td style='color:{'#b00020' if s['metrics'][m]['alert'] else 'inherit'}'>"
            f"{_fmt(s['metrics'][m]['value'])} [{_fmt(s['metrics'][m]['lower'])}, "
            f"{_fmt(s['metrics'][m]['upper'])}] / {_fmt(s['metrics'][m]['realized'])}</td>"
            for m in metrics
        )
        rows.append(
            f"<tr><td>{html.escape(_utc(s['start']))}</td><td>{s['rows']}</td><td>{s['labelled']}</td>{cells}</tr>"
        )
    mae_row = "".join(f"<td>MAE {_fmt(mae.get(m))}</td>" for m in metrics)
    table = (
        "<table border=1 cellpadding=3><tr><th>slice start (UTC)</th><th>rows</th><th>labelled</th>"
        + "".join(f"<th>{html.escape(m)}: estimate [band] / realized</th>" for m in metrics)
        + "</tr>"
        + "".join(rows)
        + f"<tr><td colspan=3>estimation error</td>{mae_row}</tr></table>"
    )
    return f"<section id='{SECTION_ID}'>{head}{lead}{charts}{table}</section>"


def _utc(value: object) -> str:
    """A slice start as ``2026-11-29 19:05:16``, UTC (no microseconds, no offset)."""
    from datetime import UTC, datetime

    try:
        when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")
