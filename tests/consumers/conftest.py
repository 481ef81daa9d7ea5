"""Fixtures of the consumer tests (helpers are in tests/support.py)."""

from __future__ import annotations

import pytest

from ..support import Stream


@pytest.fixture
def stream_factory(kafka_bootstrap: str):
    started: list[Stream] = []

    def make(topic: str, n: int, **kw: object) -> Stream:
        s = Stream(kafka_bootstrap, topic, n, **kw)  # type: ignore[arg-type]
        started.append(s)
        return s

    yield make
    for s in started:
        if s.is_alive():
            s.join(timeout=30)
