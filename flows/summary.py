"""A drift run's summary: what ``summary.json`` holds, as a typed model.

The drift flow builds one (``flows.drift``); the report, the index, the artifacts, the
webhook, the warehouse rows and the Pushgateway metrics read it back by attribute. On
disk it is the same JSON as ever (keys in the same order; ``report.json`` is the summary
plus Evidently's snapshots), and reading tolerates the summaries of older runs: fields
they lack take defaults, keys this model does not know are kept.

Nested parts whose shape belongs to another module stay plain JSON here: ``quality``
(``flows.quality``), ``performance`` (``flows.performance``), ``prediction_mix``
(``flows.slices``) and ``episodes`` (``flows.episodes``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from flows.outcome import Outcome, decide

SUMMARY_FILE = "summary.json"


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


class RunWindow(_Part):
    start: str | None = None
    end: str | None = None
    label: str | None = None


class Rule(_Part):
    drift_share: float | None = None
    n_features: int | None = None


class ReferenceInfo(_Part):
    name: str
    rows: int


class Sample(_Part):
    current_rows: int | None = None
    reference_rows: int | None = None
    note: str | None = None


class VerdictInfo(_Part):
    drift: bool
    drifted_features: list[str] = Field(default_factory=list)
    feature_share: float | None = None
    drift_share: float | None = None
    prediction_drift: bool = False
    quality_alert: bool = False
    reason: str


class ColumnResult(_Part):
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    exact: bool | None = None
    role: str


class TimelineEntry(_Part):
    start: str
    rows: int
    scores: dict[str, float | None] = Field(default_factory=dict)
    drifted: dict[str, bool] = Field(default_factory=dict)


class DriftSummary(_Part):
    outcome: Outcome | None = None  # None in runs written before outcomes existed
    run_id: str | None = None
    run_name: str | None = None
    run_time: str | None = None  # ISO-8601, UTC
    model: str
    version: str
    window: RunWindow = Field(default_factory=RunWindow)
    rule: Rule | None = None
    reference: ReferenceInfo
    current_rows: int
    sample: Sample | None = None
    verdict: VerdictInfo
    columns: list[ColumnResult]
    timeline: list[TimelineEntry] = Field(default_factory=list)
    drift_starts: dict[str, str] = Field(default_factory=dict)
    prediction_mix: list[dict[str, Any]] = Field(default_factory=list)
    quality: dict[str, Any] = Field(default_factory=dict)
    performance: dict[str, Any] | None = None
    # None: the lake has no episodes table; unset: a run from before episodes were read
    episodes: list[dict[str, Any]] | None = None

    def result(self) -> Outcome:
        """The run's outcome (runs written before outcomes existed: from their row count
        and verdict)."""
        if self.outcome is not None:
            return self.outcome
        return decide(self.current_rows, self.verdict.drift, self.verdict.quality_alert)

    @property
    def run_at(self) -> datetime | None:
        return datetime.fromisoformat(self.run_time) if self.run_time else None

    @property
    def has_episodes(self) -> bool:
        """Whether the run read the drift monitor's episodes at all."""
        return "episodes" in self.model_fields_set

    @property
    def drifted_columns(self) -> list[ColumnResult]:
        return [c for c in self.columns if c.drifted]

    def to_json(self) -> dict[str, Any]:
        """The JSON document (what was set, in the fields' order; extra keys after)."""
        return self.model_dump(exclude_unset=True)

    @classmethod
    def read(cls, path: Path) -> DriftSummary:
        """A run's ``summary.json`` (``path``: the file, or the run's folder)."""
        if path.is_dir():
            path = path / SUMMARY_FILE
        return cls.model_validate(orjson.loads(path.read_bytes()))
