"""The publisher's accounting with the broker unreachable (a closed port, no mock):
overflow goes to the spool, a full spool drops with a reason, shutdown spools the rest.
Every offered event is spooled or counted as dropped: never nowhere."""

from __future__ import annotations

import asyncio
from pathlib import Path

from api.publisher import EventPublisher
from api.spool import Spool
from common.broker import free_port


def _publisher(tmp_path: Path, *, max_bytes: int, queue_size: int) -> EventPublisher:
    spool = Spool.claim(tmp_path / "spool", max_bytes=max_bytes)
    return EventPublisher(
        bootstrap_servers=f"127.0.0.1:{free_port()}",  # nothing listens there
        topic="events",
        spool=spool,
        queue_size=queue_size,
        linger_ms=1,
        probe_interval_s=0.2,
        send_timeout_s=1,
    )


def _replayed(root: Path) -> list[bytes]:
    (spool,) = Spool.orphans(root, exclude=root / "none")
    keys = []
    while True:
        records, token = spool.read(100)
        if not records:
            break
        keys += [k for _, k, _ in records]
        spool.commit(token)
    spool.close()
    return keys


def test_queue_overflow_goes_to_the_spool_and_shutdown_spools_the_rest(tmp_path):
    async def main() -> EventPublisher:
        pub = _publisher(tmp_path, max_bytes=10**8, queue_size=10)
        await pub.start()
        # 100 offers without yielding to the loop: the queue holds 10, the rest overflows
        assert all(pub.offer(i.to_bytes(4, "big"), b"v" * 50) for i in range(100))
        assert pub.stats.spooled == 90 and pub.queue_depth == 10
        # the background task finds the broker down and spools the queue (within 10 s)
        for _ in range(200):
            if not pub.queue_depth:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the queue was not spooled within 10 s: {pub.queue_depth} left")
        await pub.stop()
        return pub

    pub = asyncio.run(main())
    assert pub.stats.enqueued == 100 and pub.stats.spooled == 100 and not pub.stats.dropped
    assert sorted(_replayed(tmp_path / "spool")) == [i.to_bytes(4, "big") for i in range(100)]


def test_a_full_spool_drops_and_counts_by_reason(tmp_path):
    async def main() -> EventPublisher:
        pub = _publisher(tmp_path, max_bytes=2_000, queue_size=5)
        await pub.start()
        results = [pub.offer(i.to_bytes(4, "big"), b"v" * 100) for i in range(50)]
        assert results.count(False) == pub.stats.dropped["spool_full"] > 0  # refused when offered
        await pub.stop()  # the 5 queued ones cannot be spooled either: counted too
        return pub

    pub = asyncio.run(main())
    dropped = pub.stats.dropped["spool_full"]
    assert dropped > 0
    assert pub.stats.spooled + dropped == 50  # each event spooled or counted, none nowhere
    assert len(_replayed(tmp_path / "spool")) == pub.stats.spooled
