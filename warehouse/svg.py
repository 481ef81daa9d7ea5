"""Inline SVG line charts, no JavaScript and nothing fetched: a dashboard that opens
from disk anywhere. One function, :func:`line_chart`."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import date, datetime

Point = tuple[datetime | date, float | None]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 220, 56, 12, 12, 36


def _x(t: datetime | date) -> float:
    if isinstance(t, datetime):
        return t.timestamp()
    return datetime(t.year, t.month, t.day).timestamp()  # noqa: DTZ001 - days are compared among themselves


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def line_chart(title: str, series: Mapping[str, Sequence[Point]], unit: str = "") -> str:
    """A titled chart of one or more series (name → (time, value) points, nulls skipped),
    with a legend, the y range and the first and last time labelled, and every point's
    value in a tooltip. No points at all → the chart says "no data" instead of an empty
    (healthy-looking) frame."""
    e = html.escape
    pts = {n: [(t, float(v)) for t, v in s if v is not None] for n, s in series.items()}
    allp = [p for s in pts.values() for p in s]
    head = f"<figure class='chart'><figcaption>{e(title)}</figcaption>"
    if not allp:
        return head + "<p class='nodata'>no data</p></figure>"
    xs = [_x(t) for t, _ in allp]
    ys = [v for _, v in allp]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(ys)), max(ys)
    if y1 <= y0:
        y1 = y0 + 1.0
    if x1 <= x0:
        x1 = x0 + 1.0

    def px(t: datetime | date) -> float:
        return LEFT + (_x(t) - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def py(v: float) -> float:
        return TOP + (1 - (v - y0) / (y1 - y0)) * (H - TOP - BOTTOM)

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' viewBox='0 0 {W} {H}' role='img'>",
        f"<line x1='{LEFT}' y1='{py(y0):.1f}' x2='{W - RIGHT}' y2='{py(y0):.1f}' stroke='#888'/>",
        f"<line x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{H - BOTTOM}' stroke='#888'/>",
        f"<text x='{LEFT - 4}' y='{TOP + 8}' text-anchor='end' font-size='10'>{_fmt(y1)}{e(unit)}</text>",
        f"<text x='{LEFT - 4}' y='{H - BOTTOM}' text-anchor='end' font-size='10'>{_fmt(y0)}{e(unit)}</text>",
    ]
    first, last = min(allp, key=lambda p: _x(p[0]))[0], max(allp, key=lambda p: _x(p[0]))[0]
    for t, anchor in ((first, "start"), (last, "end")) if last != first else ((first, "start"),):
        label = t.strftime("%Y-%m-%d %H:%M") if isinstance(t, datetime) else t.isoformat()
        y = H - BOTTOM + 14
        parts.append(f"<text x='{px(t):.1f}' y='{y}' text-anchor='{anchor}' font-size='10'>{label}</text>")
    legend = []
    for i, (name, s) in enumerate(pts.items()):
        colour = PALETTE[i % len(PALETTE)]
        s = sorted(s, key=lambda p: _x(p[0]))
        if len(s) > 1:
            line = " ".join(f"{px(t):.1f},{py(v):.1f}" for t, v in s)
            parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{line}'/>")
        for t, v in s:
            parts.append(
                f"<circle cx='{px(t):.1f}' cy='{py(v):.1f}' r='2.5' fill='{colour}'>"
                f"<title>{e(name)} {t.isoformat()}: {_fmt(v)}{e(unit)}</title></circle>"
            )
        legend.append(f"<span class='key' style='color:{colour}'>&#9632; {e(name)}</span>")
    parts.append("</svg>")
    return head + "".join(parts) + f"<div class='legend'>{' '.join(legend)}</div></figure>"
