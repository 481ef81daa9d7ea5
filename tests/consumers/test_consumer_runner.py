"""The runner in-process against the real broker: the bytes trigger flushes before the
age and row triggers would, metrics count what happened, SIGTERM-style stop flushes."""

from __future__ import annotations

import asyncio
import time

from common.topics import ensure_topics
from consumers.deadletters import DeadLetterProducer
from consumers.lake import LakeSink
from consumers.metrics import ConsumerMetrics
from consumers.runner import ConsumerRunner
from inferstream.lakecheck import landing

from ..support import Stream, read_dlq


def _value(metrics: ConsumerMetrics, name: str, **labels: str) -> float:
    v = metrics.registry.get_sample_value(name, {"group": metrics.group, **labels})
    return 0.0 if v is None else v


def test_bytes_trigger_metrics_and_final_flush(kafka_bootstrap, topic, tmp_path):
    lake_dir = tmp_path / "lake"
    asyncio.run(ensure_topics(kafka_bootstrap, {f"{topic}.dlq": 1}))
    stream = Stream(kafka_bootstrap, topic, 1000, burst=100, pause_s=0.0, poison_every=200)
    stream.start()
    stream.join(timeout=60)
    assert stream.error is None, stream.error
    metrics = ConsumerMetrics(f"runner-{topic}")
    runner = ConsumerRunner(
        bootstrap_servers=kafka_bootstrap,
        topics=[topic],
        group_id=f"runner-{topic}",
        sink=LakeSink(lake_dir),
        # only the bytes trigger can fire within the test's time
        max_batch_rows=10**9,
        max_batch_age_s=600,
        max_batch_bytes=50_000,
        max_poll_records=100,
        dlq=DeadLetterProducer(
            bootstrap_servers=kafka_bootstrap, topic=f"{topic}.dlq", group=f"runner-{topic}", client_id="t"
        ),
        metrics=metrics,
    )

    def wait_landed() -> float:
        deadline = time.monotonic() + 120
        while landing(lake_dir, stream.ids).distinct < 900 and time.monotonic() < deadline:
            time.sleep(0.2)
        return landing(lake_dir, stream.ids).distinct

    async def main() -> int:
        task = asyncio.create_task(runner.run())
        landed_early = await asyncio.to_thread(wait_landed)
        runner.stop()
        await task
        return landed_early

    landed_before_stop = asyncio.run(main())
    assert landed_before_stop >= 900  # flushed by bytes: neither 600 s nor 1e9 rows came
    result = landing(lake_dir, stream.ids)
    assert (result.distinct, result.duplicates) == (1000, 0)  # the final flush landed the rest
    assert _value(metrics, "inferstream_consumer_records_total") == 1005
    assert _value(metrics, "inferstream_consumer_dead_letters_total") == 5
    assert _value(metrics, "inferstream_consumer_batches_total") >= 3
    assert _value(metrics, "inferstream_consumer_flush_seconds_count") >= 3
    lags = [_value(metrics, "inferstream_consumer_lag", topic=topic, partition=str(p)) for p in range(4)]
    assert lags == [0.0, 0.0, 0.0, 0.0]
    assert len(read_dlq(kafka_bootstrap, f"{topic}.dlq", expected=5)) == 5
