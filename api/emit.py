"""From a built event to the publisher: PII masking, sampling, the size guard, counted."""

from __future__ import annotations

import uuid
from typing import Any

from api.metrics import ApiMetrics
from api.publisher import EventPublisher
from api.shaping import PiiMasker, encode_guarded, keep


class Emitter:
    def __init__(
        self, metrics: ApiMetrics, *, sample_rates: dict[str, float], max_event_bytes: int, masker: PiiMasker
    ) -> None:
        self.metrics = metrics
        self.sample_rates = sample_rates
        self.max_event_bytes = max_event_bytes
        self.masker = masker

    def emit(self, publisher: EventPublisher, event_id: uuid.UUID, event: dict[str, Any]) -> None:
        """Never blocks: the publisher only queues (or spools) the bytes."""
        model = event["model_name"]
        if not keep(event_id, self.sample_rates.get(model, 1.0)):
            self.metrics.sampled_out.labels(model).inc()
            return
        if self.masker.fields:
            event["features"] = self.masker.mask(event["features"])
        raw, oversized = encode_guarded(event, self.max_event_bytes)
        if oversized:
            self.metrics.oversized.inc()
        publisher.offer(event_id.bytes, raw)
