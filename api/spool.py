"""The publisher's disk spool: where events wait while Kafka cannot take them.

Layout: ``<root>/slot-<n>/`` per process. A process owns a slot by holding an
exclusive ``flock`` on ``slot-<n>/.lock`` for its whole life; the kernel drops the lock
when the process dies (SIGKILL included), so a restarted process, or a sibling worker,
can claim the slot and replay what is left. No two live processes ever read one slot,
so nothing is replayed twice by two processes.

Inside a slot: segment files ``<seq>.seg`` (appended in order, rolled at
``segment_bytes``) and ``cursor`` (the first segment's read offset, replaced
atomically after each acknowledged replay). A record is::

    MAGIC(4) | payload length u32 | crc32(payload) u32 | payload
    payload = topic length u16 | topic | key length u16 | key | value

Appends go to an in-memory buffer that ``flush`` writes with one ``os.write`` (so a
SIGKILL never leaves half a record) and ``fsync`` makes durable; the publisher flushes
and fsyncs on an interval and at shutdown, which bounds what a crash can lose. A
record whose checksum or framing is wrong is skipped and counted; reading resumes at
the next MAGIC, so the rest of the segment is recovered.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.errors import InferstreamError

log = logging.getLogger(__name__)

MAGIC = b"\xa5ISR"
_HEADER = struct.Struct("<II")  # payload length, crc32
_U16 = struct.Struct("<H")
HEADER_SIZE = len(MAGIC) + _HEADER.size
MAX_RECORD = 16 * 1024 * 1024
_MAX_BUFFER = 64 * 1024 * 1024

SpoolRecord = tuple[str, bytes, bytes]  # (topic, key, value)


class SpoolLocked(InferstreamError):
    """The slot belongs to another live process."""


def encode_record(topic: str, key: bytes, value: bytes) -> bytes:
    t = topic.encode()
    payload = b"".join((_U16.pack(len(t)), t, _U16.pack(len(key)), key, value))
    return MAGIC + _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> SpoolRecord:
    (tl,) = _U16.unpack_from(payload, 0)
    topic = payload[2 : 2 + tl].decode()
    (kl,) = _U16.unpack_from(payload, 2 + tl)
    key_start = 4 + tl
    return topic, payload[key_start : key_start + kl], payload[key_start + kl :]


def scan(data: bytes, start: int = 0) -> Iterator[tuple[int, SpoolRecord | None]]:
    """Yield ``(end_offset, record)`` for each record from ``start``; ``record`` is None
    for a corrupt stretch (bad framing or checksum), after which scanning resyncs at the
    next MAGIC."""
    pos, n = start, len(data)
    while pos < n:
        if data.startswith(MAGIC, pos) and pos + HEADER_SIZE <= n:
            length, crc = _HEADER.unpack_from(data, pos + len(MAGIC))
            end = pos + HEADER_SIZE + length
            if length <= MAX_RECORD and end <= n:
                payload = data[pos + HEADER_SIZE : end]
                if zlib.crc32(payload) == crc:
                    try:
                        record = _decode_payload(payload)
                    except (struct.error, UnicodeDecodeError):
                        record = None
                    if record is not None:
                        yield end, record
                        pos = end
                        continue
        nxt = data.find(MAGIC, pos + 1)
        end = n if nxt < 0 else nxt
        yield end, None
        pos = end


@dataclass
class SpoolStats:
    appended: int = 0
    replayed: int = 0
    corrupt: int = 0  # corrupt stretches skipped while reading


class Spool:
    """One slot directory, owned while open. Not thread-safe: one event loop uses it
    (``fsync`` of a duplicated descriptor may run in a worker thread)."""

    def __init__(self, path: Path, *, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.stats = SpoolStats()
        self._lock_fd: int | None = None
        self._segments: dict[int, int] = {}  # seq -> bytes on disk
        self._active_fd: int | None = None
        self._active_seq: int | None = None
        self._buffer = bytearray()
        self._cursor: tuple[int, int] = (0, 0)  # (seq, offset) of the next unread record
        self._read_cache: tuple[int, bytes] | None = None
        self._max_seq = 0
        self._dirty = False  # written since the last take_unsynced
        self._unsynced: list[int] = []  # retired segment descriptors awaiting fsync + close

    # -- ownership ---------------------------------------------------------------
    def open(self) -> Spool:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLocked(str(self.path)) from None
        self._lock_fd = fd
        for p in self.path.glob("*.seg"):
            with contextlib.suppress(ValueError):
                self._segments[int(p.stem)] = p.stat().st_size
        self._cursor = self._read_cursor()
        # segment numbers never repeat, so a stale cursor cannot point into a new segment
        self._max_seq = max([*self._segments, self._cursor[0]])
        first = min(self._segments, default=None)
        if first is not None and self._cursor[0] != first:
            self._cursor = (first, 0)  # the cursor's segment was replayed and deleted
        return self

    @classmethod
    def claim(cls, root: Path, *, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024) -> Spool:
        """Open the first slot under ``root`` that no live process holds."""
        root.mkdir(parents=True, exist_ok=True)
        n = 0
        while True:
            try:
                return cls(root / f"slot-{n}", max_bytes=max_bytes, segment_bytes=segment_bytes).open()
            except SpoolLocked:
                n += 1

    @classmethod
    def orphans(cls, root: Path, *, exclude: Path) -> list[Spool]:
        """Lock and return every other slot that holds data and no live owner."""
        found: list[Spool] = []
        if not root.is_dir():
            return found
        for slot in sorted(root.glob("slot-*")):
            if slot == exclude or not any(slot.glob("*.seg")):
                continue
            try:
                found.append(cls(slot, max_bytes=0).open())
            except SpoolLocked:
                continue
        return found

    def close(self) -> None:
        """Flush, fsync and release the slot. Safe to call twice."""
        if self._lock_fd is None:
            return
        try:
            self.flush()
            self._retire_active()
            for fd in self.take_unsynced():
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writing -----------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        """Bytes held: segments on disk (including replayed prefixes) plus the buffer."""
        return sum(self._segments.values()) + len(self._buffer)

    @property
    def empty(self) -> bool:
        return not self._buffer and self._unread_on_disk() == 0

    def _unread_on_disk(self) -> int:
        total = sum(self._segments.values())
        if self._segments and self._cursor[0] in self._segments:
            total -= self._cursor[1]
        return total

    def append(self, topic: str, key: bytes, value: bytes) -> bool:
        """Buffer one record; False if the spool is full (the caller counts the drop)."""
        rec = encode_record(topic, key, value)
        if self.size_bytes + len(rec) > self.max_bytes:
            return False
        self._buffer += rec
        self.stats.appended += 1
        if len(self._buffer) >= _MAX_BUFFER:
            self.flush()  # only under a flood: bounds memory between the publisher's flushes
        return True

    def flush(self) -> None:
        """Write the buffer to the active segment with one write (page cache, no fsync)."""
        if not self._buffer:
            return
        if self._active_fd is None or self._segments.get(self._active_seq or -1, 0) >= self.segment_bytes:
            self._roll()
        assert self._active_fd is not None and self._active_seq is not None
        data = bytes(self._buffer)
        written = 0
        while written < len(data):
            written += os.write(self._active_fd, data[written:])
        self._segments[self._active_seq] += len(data)
        self._buffer.clear()
        self._dirty = True

    def take_unsynced(self) -> list[int]:
        """Descriptors to ``os.fsync`` and then close, off the event loop: segments closed
        since the last call, and a duplicate of the active one if it was written to (a
        roll cannot invalidate a duplicate mid-fsync). The caller owns them."""
        fds, self._unsynced = self._unsynced, []
        if self._active_fd is not None and self._dirty:
            fds.append(os.dup(self._active_fd))
        self._dirty = False
        return fds

    def _retire_active(self) -> None:
        # no fsync here (this runs on the event loop): the next take_unsynced() hands the
        # descriptor to the publisher's sync task, close() syncs it at shutdown
        if self._active_fd is not None:
            self._unsynced.append(self._active_fd)
        self._active_fd = None
        self._active_seq = None

    def _roll(self) -> None:
        self._retire_active()
        seq = self._max_seq = self._max_seq + 1
        self._active_fd = os.open(
            self.path / f"{seq:012d}.seg", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        self._active_seq = seq
        self._segments[seq] = 0
        if len(self._segments) == 1:
            self._cursor = (seq, 0)

    # -- replay ------------------------------------------------------------------
    def read(self, max_records: int) -> tuple[list[SpoolRecord], tuple[int, int]]:
        """Up to ``max_records`` records from the oldest unread position, and the token
        to ``commit`` once they are delivered. Empty list: nothing to replay."""
        self.flush()
        while self._segments:
            seq, offset = self._cursor
            if seq not in self._segments:
                seq, offset = min(self._segments), 0
            if seq == self._active_seq:
                if offset >= self._segments[seq]:
                    return [], (seq, offset)
                self._retire_active()  # replay only closed segments; appends start a new one
            data = self._segment_bytes(seq)
            records: list[SpoolRecord] = []
            end = offset
            for end, rec in scan(data, offset):  # end: the resume position
                if rec is None:
                    self.stats.corrupt += 1
                    log.error("spool %s segment %d: corrupt record near byte %d skipped", self.path, seq, end)
                    continue
                records.append(rec)
                if len(records) >= max_records:
                    break
            if records or end > offset:
                if not records:  # only corrupt bytes up to the end: move past them
                    self.commit((seq, end))
                    continue
                return records, (seq, end)
            self._drop_segment(seq)
        return [], (0, 0)

    def commit(self, token: tuple[int, int]) -> None:
        """Mark everything before ``token`` delivered; delete finished segments."""
        seq, offset = token
        if seq not in self._segments:
            return
        if offset >= self._segments[seq] and seq != self._active_seq:
            self._drop_segment(seq)
            nxt = min(self._segments, default=None)
            self._cursor = (nxt, 0) if nxt is not None else (0, 0)
        else:
            self._cursor = (seq, offset)
        self._write_cursor()

    def _segment_bytes(self, seq: int) -> bytes:
        if self._read_cache is None or self._read_cache[0] != seq:
            self._read_cache = (seq, (self.path / f"{seq:012d}.seg").read_bytes())
        return self._read_cache[1]

    def _drop_segment(self, seq: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / f"{seq:012d}.seg").unlink()
        self._segments.pop(seq, None)
        if self._read_cache is not None and self._read_cache[0] == seq:
            self._read_cache = None

    def _read_cursor(self) -> tuple[int, int]:
        try:
            seq, offset = (self.path / "cursor").read_text().split()
            return int(seq), int(offset)
        except (FileNotFoundError, ValueError):
            return (0, 0)

    def _write_cursor(self) -> None:
        tmp = self.path / "cursor.tmp"
        tmp.write_text(f"{self._cursor[0]} {self._cursor[1]}")
        os.replace(tmp, self.path / "cursor")
