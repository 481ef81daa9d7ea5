"""The reports index as a monitor, rendered by headless Chromium: one section per model
and version (most recent first), a trend chart each, runs newest first with verdict,
window, rows and links, "no data" never green, and the model/verdict filters working."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from flows import index, report
from flows.maintenance import RUN_DIR_FORMAT
from flows.summary import DriftSummary

from .test_drift_flow import _chromium_dom

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _summary(model: str, version: str, hour: int, outcome: str, share: float, acc: float | None) -> dict:
    start = T0 + timedelta(hours=hour)
    rows = 0 if outcome == "no_data" else 100 + hour
    return {
        "outcome": outcome,
        "run_id": f"{model}-{version}-{hour}",
        "run_time": (start + timedelta(hours=1, minutes=5)).isoformat(),
        "model": model,
        "version": version,
        "window": {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), "label": "w"},
        "reference": {"name": "training reference", "rows": 569},
        "current_rows": rows,
        "verdict": {
            "drift": outcome == "drift",
            "reason": f"reason {model} {hour}",
            "drift_share": 0.5,
            "feature_share": share,
        },
        "columns": [],
        "quality": {"labelled_rows": 10 if acc is not None else 0, "accuracy": acc},
    }


def _write(root, s):
    run_dir = root / s["model"] / datetime.fromisoformat(s["run_time"]).strftime(RUN_DIR_FORMAT)
    report.write_empty_run(run_dir, DriftSummary.model_validate(s))


def _rows(dom: str) -> list[tuple[str, str, bool]]:
    """(model, outcome, hidden) of each run row, in page order."""
    return [
        (m.group(2), m.group(3), "hidden" in m.group(1) + m.group(4))
        for m in re.finditer(r"<tr([^>]*) data-model=\"([^\"]+)\" data-outcome=\"(\w+)\"([^>]*)>", dom)
    ]


def test_index_groups_trends_and_filters_in_chromium(tmp_path):
    root = tmp_path / "reports"
    for s in [
        _summary("car-loan", "1", 0, "no_drift", 0.1, 0.93),
        _summary("car-loan", "1", 1, "drift", 0.6, 0.81),
        _summary("car-loan", "1", 2, "no_data", 0.0, None),
        _summary("fraud", "3", 0, "no_drift", 0.0, None),
    ]:
        _write(root, s)
    index.refresh(root)

    dom = _chromium_dom_raw(root / "index.html", tmp_path)
    text = _text(dom)
    # most recently run model version first; its runs newest first
    assert text.index("car-loan v1") < text.index("fraud v3")
    assert _rows(dom) == [
        ("car-loan", "no_data", False),
        ("car-loan", "drift", False),
        ("car-loan", "no_drift", False),
        ("fraud", "no_drift", False),
    ]
    assert "NO DATA reason car-loan 2 2026-03-01 12:00 – 13:00 UTC (1 h) 0 569" in text
    assert "DRIFT reason car-loan 1 2026-03-01 11:00 – 12:00 UTC (1 h) 101 569 0.810 report · json" in text
    # a trend per model version: drift share (with its threshold) and accuracy across runs
    trends = re.findall(r"<svg class=\"chart trend\".*?</svg>", dom, flags=re.S)
    assert len(trends) == 2
    assert "drift share 0.50" in trends[0] and "accuracy 2026-03-01 12:00Z: 0.81" in trends[0]
    assert "drifted feature share 2026-03-01 12:00Z: 0.6" in trends[0]
    # no data is never green
    assert re.search(r"color:#8a5a00\"><b>NO DATA", dom) and not re.search(r"#1b5e20\"><b>NO DATA", dom)

    # filters, preset from the URL the way a user's link would
    only_drift = _chromium_dom_raw(root / "index.html", tmp_path, "?verdict=drift")
    assert [(m, o) for m, o, hidden in _rows(only_drift) if not hidden] == [("car-loan", "drift")]
    only_fraud = _chromium_dom_raw(root / "index.html", tmp_path, "?model=fraud")
    assert [(m, o) for m, o, hidden in _rows(only_fraud) if not hidden] == [("fraud", "no_drift")]
    assert re.search(r"<section class=\"model\" data-model=\"car-loan\" hidden", only_fraud)


def _text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def _chromium_dom_raw(html, tmp, query: str = "") -> str:
    return _chromium_dom(html, tmp, query=query, raw=True)
