"""Small inline SVG charts for the report and the index: no script, no external asset,
so a report opens offline and a chart reads the same in any browser or mail client.

Times on the x axis are UTC at minute precision. Every point carries a ``<title>`` (the
browser's tooltip) with its exact value, so nothing is only readable from the picture.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

W, H = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 26, 34
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass
class Series:
    name: str
    points: Sequence[tuple[datetime, float | None]]
    colour: str = PALETTE[0]
    dashed: bool = False


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def minute(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M}Z"


def _tick_label(t: datetime, span_s: float) -> str:
    return f"{t:%H:%M}" if span_s <= 86_400 else f"{t:%m-%d %H:%M}"


class _Frame:
    """Maps (time, value) to pixels inside the plot area."""

    def __init__(self, x0: datetime, x1: datetime, y0: float, y1: float, w: int = W, h: int = H) -> None:
        self.w, self.h = w, h
        self.x0, self.span = x0, max((x1 - x0).total_seconds(), 1e-9)
        self.y0, self.yspan = y0, (y1 - y0) or 1.0

    def x(self, t: datetime) -> float:
        return LEFT + (self.w - LEFT - RIGHT) * (t - self.x0).total_seconds() / self.span

    def y(self, v: float) -> float:
        return self.h - BOTTOM - (self.h - TOP - BOTTOM) * (v - self.y0) / self.yspan


def _axes(f: _Frame, x1: datetime, y_ticks: Sequence[float], y_fmt: str, title: str) -> list[str]:
    out = [
        f"<text x='{LEFT}' y='16' font-size='13' font-weight='bold'>{_e(title)}</text>",
        f"<line x1='{LEFT}' y1='{f.h - BOTTOM}' x2='{f.w - RIGHT}' y2='{f.h - BOTTOM}' stroke='#555'/>",
        f"<line x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{f.h - BOTTOM}' stroke='#555'/>",
    ]
    for v in y_ticks:
        y = f.y(v)
        out.append(f"<line x1='{LEFT}' y1='{y:.1f}' x2='{f.w - RIGHT}' y2='{y:.1f}' stroke='#eee'/>")
        out.append(
            f"<text x='{LEFT - 4}' y='{y + 4:.1f}' font-size='10' text-anchor='end'>{v:{y_fmt}}</text>"
        )
    for i in range(5):
        t = f.x0 + (x1 - f.x0) * (i / 4)
        x = f.x(t)
        out.append(
            f"<line x1='{x:.1f}' y1='{f.h - BOTTOM}' x2='{x:.1f}' y2='{f.h - BOTTOM + 4}' stroke='#555'/>"
        )
        out.append(
            f"<text x='{x:.1f}' y='{f.h - BOTTOM + 16}' font-size='10' text-anchor='middle'>"
            f"{_e(_tick_label(t, f.span))}</text>"
        )
    out.append(
        f"<text x='{f.w - RIGHT}' y='{f.h - 4}' font-size='10' text-anchor='end'>UTC "
        f"{_e(minute(f.x0))} – {_e(minute(x1))}</text>"
    )
    return out


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def _svg(parts: list[str], label: str, css_class: str, f: _Frame) -> str:
    return (
        f"<svg class='{css_class}' role='img' aria-label='{_e(label)}' width='{f.w}' height='{f.h}' "
        f"viewBox='0 0 {f.w} {f.h}' xmlns='http://www.w3.org/2000/svg' font-family='sans-serif'>"
        + "".join(parts)
        + "</svg>"
    )


def line_chart(
    title: str,
    series: Sequence[Series],
    x0: datetime,
    x1: datetime,
    *,
    threshold: float | None = None,
    threshold_label: str = "threshold",
    y_max: float | None = None,
    y_fmt: str = ".2f",
    css_class: str = "chart",
    size: tuple[int, int] = (W, H),
) -> str:
    """Lines over ``[x0, x1]``; a missing value (None) breaks its line; an optional
    horizontal threshold line is drawn dashed red and labelled."""
    values = [v for s in series for _, v in s.points if v is not None]
    top = max([*values, threshold or 0.0, 1e-9]) * 1.1 if y_max is None else y_max
    f = _Frame(x0, x1, 0.0, top, *size)
    parts = _axes(f, x1, _ticks(0.0, top), y_fmt, title)
    if threshold is not None:
        y = f.y(threshold)
        parts.append(
            f"<line class='threshold' x1='{LEFT}' y1='{y:.1f}' x2='{f.w - RIGHT}' y2='{y:.1f}' "
            f"stroke='#b00020' stroke-dasharray='5,4'/>"
            f"<text x='{f.w - RIGHT - 2}' y='{y - 4:.1f}' font-size='10' fill='#b00020' text-anchor='end'>"
            f"{_e(threshold_label)} {threshold:{y_fmt}}</text>"
        )
    legend_x = LEFT + 8
    for s in series:
        runs: list[list[tuple[float, float]]] = [[]]
        for t, v in s.points:
            if v is None:
                runs.append([])
                continue
            runs[-1].append((f.x(t), f.y(v)))
            parts.append(
                f"<circle cx='{f.x(t):.1f}' cy='{f.y(v):.1f}' r='3' fill='{s.colour}'>"
                f"<title>{_e(s.name)} {_e(minute(t))}: {v:.4g}</title></circle>"
            )
        dash = " stroke-dasharray='3,3'" if s.dashed else ""
        for run in runs:
            if len(run) > 1:
                pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                parts.append(
                    f"<polyline points='{pts}' fill='none' stroke='{s.colour}' stroke-width='2'{dash}/>"
                )
        parts.append(
            f"<text x='{legend_x}' y='{TOP + 10}' font-size='10' fill='{s.colour}'>■ {_e(s.name)}</text>"
        )
        legend_x += 12 + 7 * len(s.name)
    return _svg(parts, title, css_class, f)


def stacked_bars(
    title: str,
    slices: Sequence[tuple[datetime, datetime, dict[str, int]]],
    x0: datetime,
    x1: datetime,
    *,
    css_class: str = "chart",
) -> str:
    """One bar per ``(start, end, counts by class)`` slice: its height is the slice's
    rows (volume), its stacked colours the prediction mix."""
    classes = sorted({c for _, _, counts in slices for c in counts})
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
    top = max([sum(c.values()) for _, _, c in slices] + [1]) * 1.1
    f = _Frame(x0, x1, 0.0, top)
    parts = _axes(f, x1, _ticks(0.0, top), ".0f", title)
    for start, end, counts in slices:
        total = sum(counts.values())
        xa, xb = f.x(start), f.x(end)
        width = max(xb - xa - 2, 1.0)
        base = 0
        for c in classes:
            n = counts.get(c, 0)
            if not n:
                continue
            ya, yb = f.y(base + n), f.y(base)
            share = n / total if total else 0.0
            parts.append(
                f"<rect x='{xa + 1:.1f}' y='{ya:.1f}' width='{width:.1f}' height='{yb - ya:.1f}' "
                f"fill='{colours[c]}'><title>{_e(minute(start))}: prediction {_e(c)}: {n} of {total} "
                f"({share:.0%})</title></rect>"
            )
            base += n
    legend_x = LEFT + 8
    for c in classes:
        label = f"prediction {c}"
        parts.append(
            f"<text x='{legend_x}' y='{TOP + 10}' font-size='10' fill='{colours[c]}'>■ {_e(label)}</text>"
        )
        legend_x += 12 + 7 * len(label)
    return _svg(parts, title, css_class, f)
