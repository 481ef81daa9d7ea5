"""Fraud scorer: a real-time consumer that reads the same stream as the lake, in its
own consumer group, and publishes alerts to ``inference-alerts``. It exists to prove
that a new reader costs the API nothing: the API does not know it runs.

Two scores, both O(1) an event:

- ``request_rate``: events of one client within a sliding window of ``window_s``
  seconds (by event time) above ``rate_threshold``; one alert per client and window.
  The client is the record's ``client`` header, or the event's ``client_id`` field
  (the API key's name, set by the API when authentication is on); events carrying
  neither count as the client ``"anonymous"``.
- ``feature_outlier``: the largest |z| of a numeric feature against that model's and
  feature's running mean and variance (Welford), once ``min_samples`` were seen;
  above ``zscore_threshold`` alerts. Outliers are not folded into the statistics.

Delivery: where the broker has transactions (Apache Kafka), the runner commits each
batch's alerts and its consumed offsets in one transaction (consumers/transactions.py):
exactly once for readers of ``inference-alerts`` with ``isolation_level="read_committed"``.
Elsewhere (Tansu) alerts are published (acks=all) before the offsets are committed: at
least once. Either way the alert id is derived from its cause, so a replayed alert
carries the same id.

The scores are state (running statistics, windows). So that a restarted scorer decides
as the one it replaces, each assigned partition's last ``history_records`` records
before the committed offset are replayed through :meth:`FraudSink.warm` first: they
move the state but raise no alert (their alerts were committed with them).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiokafka import ConsumerRecord, TopicPartition

from consumers.deadletters import DeadLetter
from consumers.producers import Output
from consumers.sink import Sink
from consumers.validate import PoisonError, decode_event, parse_time

log = logging.getLogger(__name__)

_ALERT_NS = uuid.UUID("6b0c3f1e-4d0a-4b7e-9a51-2f1c7e0d9a10")


@dataclass
class _Welford:
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        """Fold ``x`` in, unless it would overflow the variance (|x| beyond ~1e154, e.g.
        a 1e308 the contract allows): one such value would blind the score for good."""
        n = self.n + 1
        d = x - self.mean
        mean = self.mean + d / n
        m2 = self.m2 + d * (x - mean)
        if math.isfinite(x * x) and math.isfinite(mean) and math.isfinite(m2):
            self.n, self.mean, self.m2 = n, mean, m2

    def z(self, x: float) -> float:
        if self.n < 2:
            return 0.0
        std = math.sqrt(self.m2 / (self.n - 1))
        return abs(x - self.mean) / std if std > 0 else 0.0


class FraudSink(Sink):
    def __init__(
        self,
        *,
        alerts_topic: str = "inference-alerts",
        window_s: float = 60.0,
        rate_threshold: float = 50.0,
        zscore_threshold: float = 6.0,
        min_samples: int = 200,
    ) -> None:
        self.alerts_topic = alerts_topic
        self.window_s = window_s
        self.rate_threshold = rate_threshold
        self.zscore_threshold = zscore_threshold
        self.min_samples = min_samples
        self._times: dict[str, deque[float]] = {}
        self._alerted_until: dict[str, float] = {}
        self._stats: dict[tuple[str, str], _Welford] = {}
        self._next: dict[TopicPartition, int] = {}
        self._alerts: list[Output] = []
        self._pending_alerts: list[Output] = []
        self._pending_dead: list[DeadLetter] = []
        self._dead: list[DeadLetter] = []
        self._pending = 0
        self._warming = False
        # history a restarted scorer replays per partition: its first ``min_samples``
        # values are folded in unscored (outliers too, as on a cold start), so several
        # times that many let the rest outweigh them, as in the predecessor's statistics
        self.history_records = 4 * min_samples

    # -- Sink protocol ----------------------------------------------------------------
    def assigned(self, partitions: dict[TopicPartition, tuple[int | None, str]]) -> None:
        """Scores are per process; a rebalance starts the moved partitions' history anew."""

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._next.pop(tp, None)

    @property
    def pending_rows(self) -> int:
        return self._pending

    def add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self._score(records)
        self._pending += len(records)
        self._next[tp] = records[-1].offset + 1

    def warm(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Records before the committed offset: they update the scores' state only."""
        self._warming = True
        try:
            self._score(records)
        finally:
            self._warming = False

    def _score(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for rec in records:
            try:
                ev = decode_event(rec.value)
                when = parse_time(ev["event_time"]).timestamp()
            except PoisonError as exc:
                if not self._warming:
                    self._pending_dead.append(
                        DeadLetter(rec.topic, rec.partition, rec.offset, rec.key, rec.value, str(exc))
                    )
                continue
            client = _client(rec, ev)
            try:
                self._score_rate(client, when, ev)
                self._score_features(client, ev)
            except (ArithmeticError, ValueError, TypeError) as exc:
                # a value the event contract lets through but the scores cannot take
                if not self._warming:
                    reason = f"cannot be scored: {exc.__class__.__name__}: {exc}"[:500]
                    self._pending_dead.append(
                        DeadLetter(rec.topic, rec.partition, rec.offset, rec.key, rec.value, reason)
                    )

    def flush(self) -> dict[TopicPartition, tuple[int, str]]:
        """Nothing to make durable here: the alerts are published by the runner."""
        commits = {tp: (off, "") for tp, off in self._next.items()}
        self._next = {}
        self._pending = 0
        self._alerts.extend(self._pending_alerts)
        self._pending_alerts = []
        self._dead.extend(self._pending_dead)
        self._pending_dead = []
        return commits

    def take_dead_letters(self) -> list[DeadLetter]:
        out, self._dead = self._dead, []
        return out

    def take_outputs(self) -> list[Output]:
        out, self._alerts = self._alerts, []
        return out

    # -- scores -------------------------------------------------------------------------
    def _score_rate(self, client: str, when: float, ev: dict[str, Any]) -> None:
        times = self._times.setdefault(client, deque())
        times.append(when)
        while times and times[0] <= when - self.window_s:
            times.popleft()
        if len(times) > self.rate_threshold and when >= self._alerted_until.get(client, -math.inf):
            self._alerted_until[client] = when + self.window_s
            window_start = int(times[0] // self.window_s)
            self._alert(
                "request_rate",
                client,
                ev,
                score=len(times),
                threshold=self.rate_threshold,
                cause=f"{client}:{window_start}",
                detail={"window_s": self.window_s},
            )

    def _score_features(self, client: str, ev: dict[str, Any]) -> None:
        model = ev["model_name"]
        worst, worst_feature = 0.0, None
        numeric = []
        for name, value in ev["features"].items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            stats = self._stats.get((model, name))
            if stats is None:
                stats = self._stats[(model, name)] = _Welford()
            numeric.append((stats, float(value)))
            if stats.n >= self.min_samples:
                z = stats.z(float(value))
                if z > worst:
                    worst, worst_feature = z, name
        if worst > self.zscore_threshold:
            self._alert(
                "feature_outlier",
                client,
                ev,
                score=round(worst, 3),
                threshold=self.zscore_threshold,
                cause=ev["event_id"],
                detail={"feature": worst_feature, "value": ev["features"][worst_feature]},
            )
            return  # an outlier does not move the baseline
        for stats, x in numeric:
            stats.add(x)

    def _alert(
        self,
        kind: str,
        client: str,
        ev: dict[str, Any],
        *,
        score: float,
        threshold: float,
        cause: str,
        detail: dict[str, Any],
    ) -> None:
        if self._warming:
            return  # committed together with the record that caused it
        alert_id = uuid.uuid5(_ALERT_NS, f"{kind}:{cause}")
        value = orjson.dumps(
            {
                "alert_id": str(alert_id),
                "kind": kind,
                "client": client,
                "model_name": ev["model_name"],
                "event_id": ev["event_id"],
                "event_time": ev["event_time"],
                "score": score,
                "threshold": threshold,
                "detail": detail,
                "alerted_at": datetime.now().astimezone().isoformat(),
            }
        )
        self._pending_alerts.append(Output(self.alerts_topic, alert_id.bytes, value))
        log.debug("alert kind=%s event_id=%s score=%s", kind, ev["event_id"], score)


def _client(rec: ConsumerRecord[bytes, bytes], ev: dict[str, Any]) -> str:
    for key, value in rec.headers or ():
        if key == "client" and value:
            client_header: bytes = value  # aiokafka is untyped: a record's headers are Any
            return client_header.decode(errors="replace")
    client = ev.get("client_id")
    return str(client) if client else "anonymous"
