"""Streaming drift monitor: consumer group ``drift-monitor`` on ``inference-events``.

Per model version a window of the last ``window_events`` events (``drift_window``) is
compared with the model's reference every ``eval_interval_s`` seconds (wall clock, only
windows that got new events and hold at least ``min_events``), column by column with
the batch flow's tests. Episodes (``drift_episodes``) turn verdicts into one
``drift_episode_opened`` and one ``drift_episode_closed`` alert on ``inference-alerts``
(keyed by model|version|column, so both land on one partition, in order); fraud alerts
have other ``kind`` values. With ``webhook_url`` each alert is also POSTed there, once,
best effort (a failure is logged and counted, never retried: the topic has it).
Gauges per model version and column: the score and whether it is in an episode.

Per batch, not per event: :func:`decode_fast` decodes and validates the batch's records
with msgspec against the event contract (C, no Python a field) and groups them by model
version; each window then takes its group in one :meth:`Window.extend` (column arrays,
ring buffers). A batch with anything that is not a plain contract event (poison, an
unknown field, an integer beyond 64 bits) is decoded again record by record exactly as
every sink does (``validate.decode_event``), which also dead-letters the poison; the two
paths give the same windows and the same dead letters (a test holds them to it).
Evaluation runs on a timer (``eval_interval_s``), never per batch.

Restarts: the runner seeks each assigned partition ``window_events`` records behind its
committed offset (``rewind``), so the window is rebuilt from the topic; those replayed
records feed the window only (no dead letters twice). Open episodes are recovered from
the alerts topic before consuming (``consumers.drift_recover.recover_episodes``): an
alert is published (acks=all) before the offsets are committed, so an episode whose
opening alert is out is known to the next process, which neither repeats it nor misses
the closing one.

Scale: one process per group holds every partition, hence whole windows. A second
process in the group owns some partitions and sees a share of every model's events
(keys are random): each evaluates its own share and raises its own episodes (a test runs
two); each alert names the partitions of the process that raised it (``partitions``).
Run one replica (README, "The streaming drift monitor", says exactly what two do).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from operator import attrgetter
from typing import Annotated, Any, Literal

import httpx
import msgspec
import orjson
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

from common.errors import ConfigError
from consumers.deadletters import DeadLetter
from consumers.drift_episodes import Episodes, Key, Transition
from consumers.drift_window import Reference, Window
from consumers.producers import Output
from consumers.sink import Sink
from consumers.validate import UUID_RE, PoisonError, decode_event

log = logging.getLogger(__name__)
_ALERT_NS = uuid.UUID("9a3e1c07-2b6d-4f58-8c1a-6e4d2b7f0c93")

ReferenceLoader = Callable[[str, str], Reference]


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client; no `_created` twins
        labels = ["model", "version", "column"]
        self.score = Gauge(
            "inferstream_drift_score",
            "Last drift score of the column's window (p-value or distance, see method)",
            [*labels, "method"],
            registry=registry,
        )
        self.in_episode = Gauge(
            "inferstream_drift_in_episode",
            "1 while the column is in a drift episode",
            labels,
            registry=registry,
        )
        self.evaluations = Counter(
            "inferstream_drift_evaluations", "Window evaluations", ["model", "version"], registry=registry
        )
        self.webhook_failures = Counter(
            "inferstream_drift_webhook_failures", "Episode alerts the webhook did not take", registry=registry
        )


class DriftSink(Sink):
    def __init__(
        self,
        *,
        load_reference: ReferenceLoader,
        alerts_topic: str = "inference-alerts",
        window_events: int = 5_000,
        min_events: int = 1_000,
        eval_interval_s: float = 5.0,
        consecutive: int = 3,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        webhook_url: str | None = None,
        webhook_timeout_s: float = 5.0,
    ) -> None:
        self.load_reference = load_reference
        self.alerts_topic = alerts_topic
        self.window_events = window_events
        self.min_events = min(min_events, window_events)
        self.eval_interval_s = eval_interval_s
        self.episodes = Episodes(consecutive)
        self.metrics = DriftMetrics(registry or CollectorRegistry())
        self.clock = clock
        self.webhook_url = webhook_url
        self.webhook_timeout_s = webhook_timeout_s
        self.windows: dict[tuple[str, str], Window] = {}
        self._unmonitored: dict[tuple[str, str], str] = {}  # model version -> why not
        self._committed: dict[TopicPartition, int] = {}
        self._next: dict[TopicPartition, int] = {}
        self._pending = 0
        self._pending_alerts: list[Output] = []
        self._alerts: list[Output] = []
        self._pending_dead: list[DeadLetter] = []
        self._dead: list[DeadLetter] = []
        self._last_eval = clock()
        self._last_coord = ""
        self.evaluations = 0
        self.transitions: list[Transition] = []

    # -- Sink protocol ----------------------------------------------------------------
    def assigned(self, partitions: dict[TopicPartition, tuple[int | None, str]]) -> None:
        for tp, (off, _) in partitions.items():
            self._committed[tp] = off or 0
        log.info(
            "drift: this process reads partitions %s; its windows hold only their events",
            ",".join(f"{tp.topic}:{tp.partition}" for tp in sorted(self._committed)),
        )

    def rewind(self, partitions: dict[TopicPartition, tuple[int | None, str]]) -> dict[TopicPartition, int]:
        """Where to start each newly assigned partition: ``window_events`` records behind
        its committed offset, so the window is rebuilt from the topic."""
        return {tp: max(0, off - self.window_events) for tp, (off, _) in partitions.items() if off}

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    @property
    def pending_rows(self) -> int:
        return self._pending

    def add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Decode the batch (fast, or exactly: see :func:`decode_fast`), then extend each
        model version's window once with its events."""
        groups = decode_fast(records)
        if groups is None:
            groups = self._decode_exact(tp, records)
        for (model, version), (features, predictions, scores) in groups.items():
            window = self._window(model, version)
            if window is not None:
                window.extend(features, predictions, scores)
        if records:
            self._last_coord = f"{tp.partition}:{records[-1].offset}"
            self._pending += len(records)
            self._next[tp] = records[-1].offset + 1
        self.maybe_evaluate()

    def _decode_exact(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> _Groups:
        """Record by record with ``validate.decode_event`` (as every sink decides what is
        poison); poison is dead-lettered unless it is a rebuilt window's record."""
        replay_below = self._committed.get(tp, 0)
        groups: _Groups = {}
        for rec in records:
            try:
                ev = decode_event(rec.value)
            except PoisonError as exc:
                if rec.offset >= replay_below:  # a rebuilt window's record was dead-lettered before
                    self._pending_dead.append(
                        DeadLetter(rec.topic, rec.partition, rec.offset, rec.key, rec.value, str(exc))
                    )
                continue
            if ev.get("status") != "ok" or ev.get("synthetic"):
                continue
            group = groups.setdefault((ev["model_name"], ev["model_version"]), ([], [], []))
            group[0].append(ev["features"])
            group[1].append(ev.get("prediction"))
            group[2].append(ev.get("scores"))
        return groups

    def flush(self) -> dict[TopicPartition, tuple[int, str]]:
        """Nothing to make durable: the runner publishes the alerts before committing."""
        commits = {tp: (off, "") for tp, off in self._next.items()}
        self._next = {}
        self._pending = 0
        if self.webhook_url:
            for alert in self._pending_alerts:
                self._post(alert.value)
        self._alerts.extend(self._pending_alerts)
        self._pending_alerts = []
        self._dead.extend(self._pending_dead)
        self._pending_dead = []
        return commits

    def _post(self, value: bytes) -> None:
        """Best effort, once per alert (flush runs in a worker thread): a webhook that is
        down must not stop the stream; the alert is on the alerts topic regardless."""
        assert self.webhook_url is not None
        try:
            r = httpx.post(
                self.webhook_url,
                content=value,
                headers={"content-type": "application/json"},
                timeout=self.webhook_timeout_s,
            )
            r.raise_for_status()
        except httpx.HTTPError as exc:
            self.metrics.webhook_failures.inc()
            log.error("drift: webhook %s failed: %r (INFERSTREAM_DRIFT_WEBHOOK_URL)", self.webhook_url, exc)

    def take_dead_letters(self) -> list[DeadLetter]:
        out, self._dead = self._dead, []
        return out

    def take_outputs(self) -> list[Output]:
        out, self._alerts = self._alerts, []
        return out

    # -- evaluation -------------------------------------------------------------------
    def _window(self, model: str, version: str) -> Window | None:
        key = (model, version)
        window = self.windows.get(key)
        if window is not None or key in self._unmonitored:
            return window
        try:
            ref = self.load_reference(model, version)
        except (ConfigError, FileNotFoundError, OSError) as exc:
            self._unmonitored[key] = str(exc)
            log.warning("drift: model %s version %s is not monitored: %s", model, version, exc)
            return None
        window = self.windows[key] = Window(ref, self.window_events)
        return window

    def maybe_evaluate(self, force: bool = False) -> list[Transition]:
        now = self.clock()
        if not force and now - self._last_eval < self.eval_interval_s:
            return []
        self._last_eval = now
        out: list[Transition] = []
        for (model, version), window in self.windows.items():
            if not window.added or len(window) < self.min_events:
                continue
            self.evaluations += 1
            self.metrics.evaluations.labels(model, version).inc()
            at = f"{self.evaluations}:{self._last_coord}"
            for result in window.evaluate():
                key: Key = (model, version, result.column)
                self.metrics.score.labels(model, version, result.column, result.method).set(result.score)
                t = self.episodes.observe(key, result.drifted, at)
                self.metrics.in_episode.labels(model, version, result.column).set(
                    1 if self.episodes.in_episode(key) else 0
                )
                if t is not None:
                    self._alert(t, result.method, result.score, result.threshold, len(window))
                    out.append(t)
        self.transitions.extend(out)
        return out

    def restore(self, open_episodes: dict[Key, str]) -> None:
        for key, episode_id in open_episodes.items():
            self.episodes.restore(key, episode_id)
            self.metrics.in_episode.labels(*key).set(1)

    def _alert(self, t: Transition, method: str, score: float, threshold: float, n: int) -> None:
        model, version, column = t.key
        alert_id = uuid.uuid5(_ALERT_NS, f"{t.kind}:{t.episode_id}")
        value = orjson.dumps(
            {
                "alert_id": str(alert_id),
                "kind": t.kind,
                "episode_id": t.episode_id,
                "model_name": model,
                "model_version": version,
                "column": column,
                "method": method,
                "score": score,
                "threshold": threshold,
                "window_events": n,
                # the partitions whose events this process's windows hold (see "Scale")
                "partitions": sorted(tp.partition for tp in self._committed),
                "consecutive_evaluations": t.evaluations,
                "alerted_at": datetime.now().astimezone().isoformat(),
            }
        )
        self._pending_alerts.append(Output(self.alerts_topic, "|".join(t.key).encode(), value))
        log.warning(
            "drift %s model=%s version=%s column=%s score=%.4g",
            t.kind,
            model,
            version,
            column,
            score,
        )


_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # orjson reads larger ones as floats
_Value = float | _Int | str | bool | None


class _Event(msgspec.Struct, forbid_unknown_fields=True):
    """The event contract (``common.events.InferenceEvent``) as msgspec types: what
    this decodes, ``validate.decode_event`` accepts and ``orjson`` reads the same way
    (every field is typed, none skipped, so every string is checked UTF-8; integers
    that orjson would read as floats are refused; it nests less deep than orjson)."""

    schema_version: Literal[1]
    event_id: Annotated[str, msgspec.Meta(pattern=UUID_RE.pattern)]
    event_time: str
    model_name: str
    model_version: str
    features: dict[str, _Value]
    latency_ms: float
    status: str
    prediction: _Value = None
    scores: dict[str, float] | None = None
    http_latency_ms: float | None = None
    error: str | None = None
    synthetic: bool = False
    client_id: str | None = None


_decode_event = msgspec.json.Decoder(_Event).decode
_model_version = attrgetter("model_name", "model_version")
_value, _status, _synthetic = attrgetter("value"), attrgetter("status"), attrgetter("synthetic")
_features, _prediction, _scores = attrgetter("features"), attrgetter("prediction"), attrgetter("scores")
_Groups = dict[tuple[str, str], tuple[list[Any], list[Any], list[Any]]]


def decode_fast(records: list[ConsumerRecord[bytes, bytes]]) -> _Groups | None:
    """The batch's monitored events (status ok, not synthetic) grouped by model version
    as (features, predictions, scores) lists, decoded and validated in C by msgspec;
    None when any record is not a plain contract event (poison, an unknown field, an
    integer beyond 64 bits...): the caller then decodes the batch record by record,
    exactly. One call a record and no Python a field: 2-3x the exact path."""
    try:
        evs = list(map(_decode_event, map(_value, records)))
    except (msgspec.DecodeError, TypeError):  # TypeError: a tombstone (None)
        return None
    if set(map(_status, evs)) != {"ok"} or any(map(_synthetic, evs)):
        evs = [e for e in evs if e.status == "ok" and not e.synthetic]
    keys = set(map(_model_version, evs))
    groups: _Groups = {}
    for key in keys:
        mine = evs if len(keys) == 1 else [e for e in evs if _model_version(e) == key]
        groups[key] = (list(map(_features, mine)), list(map(_prediction, mine)), list(map(_scores, mine)))
    return groups
