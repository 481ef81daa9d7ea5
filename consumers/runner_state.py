"""The consumer runner's settings and state, shared by its parts: assignment
(consumers/rebalance.py), flush and commit (consumers/committing.py) and the fetch
loop with its health (consumers/runner.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumers.deadletters import DeadLetter, DeadLetterProducer
from consumers.lifecheck import LifeCheck
from consumers.metrics import ConsumerMetrics
from consumers.producers import Output, OutputProducer
from consumers.sink import Sink
from consumers.transactions import TransactionalCommitter

log = logging.getLogger("consumers.runner")  # one logger for the runner's parts

FaultStep = Literal["dead_letters_published", "batch_durable"]
"""Where ``fault_kill_at`` kills: right after a batch's dead letters were acknowledged
(before the sink's durable step for a sink that publishes them first, after it for the
others), or right after the sink made the batch durable (before the group commit; for
the others, also before their dead letters are published)."""


class RunnerState:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topics: list[str],
        group_id: str,
        sink: Sink,
        max_batch_rows: int = 50_000,
        max_batch_age_s: float = 2.0,
        poll_timeout_ms: int = 500,
        session_timeout_ms: int = 6_000,
        client_id: str = "inferstream-consumer",
        pause_before_commit_s: float = 0.0,
        max_batch_bytes: int = 64 * 1024 * 1024,
        dead_letter_producer: DeadLetterProducer | None = None,
        output_producer: OutputProducer | None = None,
        metrics: ConsumerMetrics | None = None,
        max_poll_records: int = 10_000,
        dlq_retry_timeout_s: float = 120.0,
        stuck_after_s: float = 60.0,
        transactions: TransactionalCommitter | None = None,
        fault_kill_at: FaultStep | None = None,
    ) -> None:
        self.sink = sink
        self.transactions = transactions
        self.warm_until: dict[TopicPartition, int] = {}  # history shown to the sink, not added
        # fault injection only: widens the window between "durable" and "committed"
        # so that crash tests can land in it (a real crash there is rare but possible)
        self.pause_before_commit_s = pause_before_commit_s
        self.fault_kill_at = fault_kill_at
        self.topics = topics
        self.group_id = group_id
        self.max_batch_rows = max_batch_rows
        self.max_batch_age_s = max_batch_age_s
        self.poll_timeout_ms = poll_timeout_ms
        self.running = True
        self.max_batch_bytes = max_batch_bytes
        self.max_poll_records = min(max_poll_records, max_batch_rows)
        self.dead_letter_producer = dead_letter_producer
        self.output_producer = output_producer  # the sink's outputs (alerts)
        self.dlq_retry_timeout_s = dlq_retry_timeout_s
        self.stuck_after_s = stuck_after_s
        self.metrics = metrics or ConsumerMetrics(group_id)
        self.records = 0
        self.batches = 0
        self.dead_letters = 0
        # asyncio.Lock binds to the running loop on first use, not here
        self.lock = asyncio.Lock()
        self._oldest: float | None = None
        self._pending_records = 0
        self._pending_bytes = 0
        self._to_commit: dict[TopicPartition, tuple[int, str]] = {}
        self._dead: list[DeadLetter] = []
        self._outputs: list[Output] = []
        self._position: dict[TopicPartition, int] = {}
        self.ready: set[TopicPartition] = set()  # assigned and known to the sink
        # per partition, a fetched record to read back (see consumers.lifecheck), and the
        # newest one fetched: it becomes the anchor once the anchor's log is confirmed
        self.life = LifeCheck(bootstrap_servers)
        self._anchor: dict[TopicPartition, ConsumerRecord[bytes, bytes]] = {}
        self._newest: dict[TopicPartition, ConsumerRecord[bytes, bytes]] = {}
        self._suspect: set[TopicPartition] = set()  # to check at the next flush
        self._life_checked_at = 0.0
        # health: what this runner last committed, and when it last made progress
        self.committed_offsets: dict[TopicPartition, int | None] = {}
        self._progress_at = time.monotonic()
        self.stuck = False
        self.lag_behind_commits: int | None = None
        # a sink whose flush() may run while add() is called keeps the loop fetching
        self.pipelined = sink.pipelined
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_requested = False
        self._lag_at = 0.0
        self._consumer_kwargs: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(1000, session_timeout_ms // 3),
            max_poll_interval_ms=300_000,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the runner is not running")
        return self._consumer

    def stop(self) -> None:
        """Ask the loop to end (signal-handler safe)."""
        self.running = False

    def _crash_at(self, step: FaultStep, dead_letters: int) -> None:
        """Fault injection for crash tests: SIGKILL this process at ``step`` of the first
        flush that has dead letters (``fault_kill_at``); nothing runs after it, as in a
        real crash there."""
        if self.fault_kill_at == step and dead_letters:
            log.error("fault injection: SIGKILL at %s with %d dead letters", step, dead_letters)
            os.kill(os.getpid(), signal.SIGKILL)

    def _count_dead_letters(self, n: int) -> None:
        self.dead_letters += n
        self.metrics.dead_letters.inc(n)
