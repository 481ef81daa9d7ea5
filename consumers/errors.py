"""Errors of the stream consumers.

InferstreamError (common.errors)
└── DependencyUnavailable (retriable)
    └── SinkUnavailable      a sink could not make a batch durable (database down,
                             disk full); the runner retries with backoff and commits
                             nothing meanwhile
"""

from __future__ import annotations

from common.errors import DependencyUnavailable


class SinkUnavailable(DependencyUnavailable):
    """The sink kept its batch; flushing again later may succeed."""
