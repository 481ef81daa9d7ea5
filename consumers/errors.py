"""Errors of the stream consumers.

InferstreamError (common.errors)
├── DependencyUnavailable (retriable)
│   └── SinkUnavailable      a sink could not make a batch durable (database down,
│       │                    disk full); the runner retries with backoff and commits
│       │                    nothing meanwhile
│       └── NotAcknowledged  some dead letters (or sink outputs) were not acknowledged;
│                            ``unsent`` holds exactly those, so a retry sends only them
└── DeadLettersStuck         dead letters stayed unacknowledged for longer than
                             ``dlq_retry_timeout_s``: the consumer stops with an error
                             (exit status 2), so that it is restarted and seen
"""

from __future__ import annotations

from typing import Any

from common.errors import DependencyUnavailable, InferstreamError


class SinkUnavailable(DependencyUnavailable):
    """The sink kept its batch; flushing again later may succeed."""


class NotAcknowledged(SinkUnavailable):
    """Records the producer could not get acknowledged (the others were)."""

    def __init__(self, message: str, unsent: list[Any]) -> None:
        super().__init__(message)
        self.unsent = unsent


class DeadLettersStuck(InferstreamError):
    """Not retried: the process ends, its offsets uncommitted past the unsent letters."""
