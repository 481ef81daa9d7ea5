"""What the consumer runner asks of a sink: every member it uses is declared here.

A sink subclasses :class:`Sink`: it must implement the abstract members (adding,
flushing, partition changes, dead letters) and may override the others, whose defaults
do nothing: a sink with outputs (alerts) returns them from ``take_outputs``; one with
state to rebuild on assignment sets ``history_records`` (``warm``) or answers
``rewind``; one whose ``flush`` may run while ``add`` is called sets ``pipelined``; one
whose durable step also records the offsets past its poison records (the lake table)
sets ``dead_letters_before_durable`` and implements ``prepare`` and ``flush_prepared``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from aiokafka import ConsumerRecord, TopicPartition

from consumers.deadletters import DeadLetter
from consumers.producers import Output

Records = list[ConsumerRecord[bytes, bytes]]
Committed = dict[TopicPartition, tuple[int | None, str]]


class Sink(ABC):
    pipelined: bool = False
    """``flush`` may run in a thread while the loop keeps calling ``add`` (the runner
    keeps fetching during a flush)."""

    dead_letters_before_durable: bool = False
    """The runner publishes the batch's dead letters, acknowledged, *before* the sink
    makes the batch durable: ``prepare`` → publish → ``flush_prepared``. For a sink whose
    durable step is itself the record of progress (the lake table holds the next
    offsets): once it is done, a restart resumes past the poison records, so dead letters
    published afterwards would be lost by a crash in between. The price is at least
    once into the DLQ: a crash after the publish and before the durable step publishes
    them again on replay. False: ``flush``, then ``take_dead_letters`` published before
    the offsets are committed."""

    def resumes_from_store(self, tp: TopicPartition) -> bool:
        """``tp``'s progress is kept by the sink's own store (the lake table holds the
        next offsets; ``assigned`` answers where to resume). Then the group's commit of a
        partition the store does not know is used only when its metadata names the
        partition's life; one without (a broker that drops commit metadata) may belong to
        another life of the log, e.g. made just before the broker restarted without its
        data, and would skip the new log's first records: the partition is read from its
        start instead. By default False: the group's commit is the progress."""
        return False

    history_records: int = 0
    """Above 0: on assignment, up to that many records of each partition before its
    committed offset are shown to ``warm`` (never added, scored as new, or committed)."""

    @abstractmethod
    def assigned(self, partitions: Committed) -> dict[TopicPartition, int] | None:
        """Partitions now owned, with their committed offset and commit metadata.
        A sink that keeps its own progress (the lake table) returns where to resume
        each partition; the runner seeks there (the group's commit is then a hint)."""

    def rewind(self, partitions: Committed) -> dict[TopicPartition, int]:
        """Called right after ``assigned`` with the same argument: where to seek those
        partitions (the drift monitor reads its window back from before the committed
        offset). By default none."""
        return {}

    def warm(self, tp: TopicPartition, records: Records) -> None:
        """Records before the committed offset (see ``history_records``): state only.
        By default nothing to rebuild."""
        return

    @abstractmethod
    def add(self, tp: TopicPartition, records: Records) -> None: ...

    @abstractmethod
    def flush(self) -> dict[TopicPartition, tuple[int, str]]:
        """Make everything added durable, then clear it. On failure raise OSError or
        SinkUnavailable and keep the batch (the runner retries with backoff and commits
        nothing meanwhile). Returns, per partition, the next offset to commit and the
        commit metadata. Runs in a worker thread: the event loop keeps heartbeating."""

    def prepare(self) -> list[DeadLetter]:
        """With ``dead_letters_before_durable``: take what was added so far as the next
        batch, nothing durable yet, and return its dead letters. A batch whose
        ``flush_prepared`` failed stays prepared and is not prepared again: its dead
        letters are returned once. Runs in a worker thread."""
        raise NotImplementedError(f"{type(self).__name__} sets dead_letters_before_durable without prepare")

    def flush_prepared(self) -> dict[TopicPartition, tuple[int, str]]:
        """With ``dead_letters_before_durable``: make the prepared batch durable (only
        it: what was added since waits for the next ``prepare``), as ``flush`` does; on
        failure keep it prepared. Runs in a worker thread."""
        raise NotImplementedError(
            f"{type(self).__name__} sets dead_letters_before_durable without flush_prepared"
        )

    @abstractmethod
    def take_dead_letters(self) -> list[DeadLetter]:
        """Poison records found by ``flush`` since the last call (their offsets are in
        the flush's commits: the runner publishes them durably before committing)."""

    def take_outputs(self) -> list[Output]:
        """Records to publish with the flush's commits (e.g. alerts). By default none."""
        return []

    @abstractmethod
    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget pending work of partitions no longer owned."""

    @property
    @abstractmethod
    def pending_rows(self) -> int:
        """Rows added and not yet flushed (the runner flushes when there are any)."""

    def close(self) -> None:
        """Release what the sink holds (a connection pool) once the runner has ended.
        By default nothing."""
        return
