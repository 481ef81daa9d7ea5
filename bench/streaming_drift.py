"""The streaming drift monitor on the car-loan data: alert delay, false alarms, throughput.

    .venv/bin/python bench/streaming_drift.py [--rate 1000] [--cache data/cache]

The car-loan reference (50k rows) is the model's reference (prediction ``y_pred``, score
``y_pred_proba``); events are encoded as the API publishes them and fed, as Kafka
records, to the monitor's sink (``consumers.drift.DriftSink``) with the service's
default settings (window 5000, min 1000, every 5 s, K=3). Three runs, one process:

    delay       the analysis part (50k rows; it drifts in its second half) replayed at
                ``--rate`` events/s on a simulated clock (event i arrives at i/rate s):
                events and seconds from the first event of the second half (row 25,000)
                to the first opening alert; opening alerts during the first half are
                false alarms
    stable      the reference rows, shuffled, replayed at ``--rate`` until at least 100
                evaluations: opening alerts are false alarms
    throughput  the monitor on the analysis records replayed ``--repeat`` times (real
                clock, the service's settings, evaluations included, one forced at the
                end) beside the baseline: decoding the same records only (orjson), the
                least any consumer of them does. Then, on a real single-node Apache Kafka
                (KRaft, started here; ``--no-kafka`` skips it), the same events consumed
                from a 4-partition topic by one process: raw (fetch only), fetch + the
                monitor's sink, and the service itself (``ConsumerRunner`` with the
                sink, group ``drift-monitor``: commits, alerts published), ``--rounds``
                rounds alternating, the median of each

Each row gives wall-clock events/s and events per CPU-second of this process
(``time.process_time``: what one process sustains when it has a core; wall clock on a
shared machine also counts other programs' turns). The delay and stable runs use a
simulated clock. Last line: ``delay_events=... delay_s=... false_alarms=...
evaluations=... events_per_s=... events_per_cpu_s=... baseline_events_per_s=...
eval_ms=... kafka_raw_events_per_s=... kafka_monitor_events_per_s=...
kafka_service_events_per_s=... (and each _per_cpu_s) target_events_per_s=50000``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import polars as pl
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from common import events
from common.kafka_cluster import KafkaCluster
from common.topics import ensure_topics
from consumers.deadletters import DeadLetterProducer
from consumers.drift import DriftSink
from consumers.drift_episodes import OPENED
from consumers.drift_window import Reference
from consumers.metrics import ConsumerMetrics
from consumers.producers import OutputProducer
from consumers.runner import ConsumerRunner
from inferstream.datasets import CAR_LOAN_FEATURES, car_loan

TP = TopicPartition("inference-events", 0)
BATCH = 500  # records a fetch hands the sink


def _reference(ref: pl.DataFrame) -> Reference:
    kinds = {f.name: ("num" if f.type == "number" else "cat") for f in CAR_LOAN_FEATURES}
    kinds |= {"prediction": "cat", "score": "num"}
    frame = ref.rename({"y_pred": "prediction", "y_pred_proba": "score"})
    return Reference.from_frame("car_loan", "1", frame, kinds, score_label="1")


def _records(df: pl.DataFrame) -> list[ConsumerRecord[bytes, bytes]]:
    names = [f.name for f in CAR_LOAN_FEATURES]
    now = events.utcnow()
    out = []
    for i, row in enumerate(df.iter_rows(named=True)):
        ev = events.build_event(
            event_id=events.uuid7(),
            event_time=now,
            model_name="car_loan",
            model_version="1",
            features={n: row[n] for n in names},
            prediction=int(row["y_pred"]),
            scores={"0": 1 - row["y_pred_proba"], "1": row["y_pred_proba"]},
            latency_ms=0.1,
        )
        out.append(ConsumerRecord(TP.topic, 0, i, 0, 0, None, events.encode(ev), None, 0, 0, ()))
    return out


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _replay(
    sink: DriftSink, clock: _Clock, records: list, rate: float, offset0: int = 0
) -> list[tuple[int, str]]:
    """Feed ``records`` in fetch-sized batches at ``rate``; (event index, kind) of each alert."""
    out = []
    for start in range(0, len(records), BATCH):
        batch = records[start : start + BATCH]
        clock.now = (offset0 + start + len(batch)) / rate
        sink.add(TP, batch)
        sink.flush()
        for o in sink.take_outputs():
            out.append((offset0 + start + len(batch), orjson.loads(o.value)))
    return out


Rate = tuple[float, float]  # events per wall-clock second, per CPU-second of this process


def _rate(n: int, wall: float, cpu: float) -> Rate:
    return n / wall, n / cpu if cpu > 0 else float("nan")


def _median(rates: list[Rate]) -> Rate:
    return statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)


async def _consume(bootstrap: str, topic: str, n: int, sink: DriftSink | None) -> Rate:
    """Events/s reading ``n`` records of ``topic`` from the start, each fetched batch given to ``sink``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got, t0, c0 = 0, time.perf_counter(), time.process_time()
        while got < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, msgs in batch.items():
                if sink is not None:
                    sink.add(tp, msgs)
                got += len(msgs)
        if sink is not None:
            sink.maybe_evaluate(force=True)
        return _rate(got, time.perf_counter() - t0, time.process_time() - c0)
    finally:
        await consumer.stop()


async def _service(bootstrap: str, topic: str, n: int, reference: Reference, round_: int) -> Rate:
    """``inferstream consume drift``'s runner and sink (a fresh group each round, so
    it reads from the start), until it has consumed every record."""
    group = f"drift-monitor-bench-{round_}"
    sink = DriftSink(load_reference=lambda m, v: reference, alerts_topic=f"{topic}.alerts")
    runner = ConsumerRunner(
        bootstrap_servers=bootstrap,
        topics=[topic],
        group_id=group,
        sink=sink,
        dead_letter_producer=DeadLetterProducer(
            bootstrap_servers=bootstrap, topic=f"{topic}.dlq", group=group, client_id="bench"
        ),
        output_producer=OutputProducer(bootstrap_servers=bootstrap, client_id="bench"),
        metrics=ConsumerMetrics(group),
    )
    task = asyncio.create_task(runner.run())
    # the runner offers no event for its record count: poll it (5 ms, a cost the
    # measured process pays, so the figure errs low); joining the group is not timed
    while runner.records == 0 and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    t0, c0 = time.perf_counter(), time.process_time()
    first = runner.records
    while runner.records < n and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    runner.stop()
    await task
    return _rate(runner.records - first, wall, cpu)


async def _kafka_rates(bootstrap: str, records: list, reference: Reference, rounds: int) -> dict[str, Rate]:
    """Events/s of one process consuming ``records`` from a fresh 4-partition topic: raw,
    with the monitor's ``add`` on every fetched batch, and as the service runs it."""
    topic = "bench-streaming-drift"
    await ensure_topics(bootstrap, {topic: 4, f"{topic}.alerts": 1, f"{topic}.dlq": 1})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        for rec in records:
            await producer.send(topic, rec.value, key=events.uuid7().bytes)
        await producer.flush()
    finally:
        await producer.stop()
    n = len(records)
    out: dict[str, list[Rate]] = {"raw": [], "monitor": [], "service": []}
    for r in range(rounds):
        out["raw"].append(await _consume(bootstrap, topic, n, None))
        out["monitor"].append(
            await _consume(bootstrap, topic, n, DriftSink(load_reference=lambda m, v: reference))
        )
        out["service"].append(await _service(bootstrap, topic, n, reference, r))
    return {k: _median(v) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=1000.0, help="replay rate, events/s (simulated clock)")
    p.add_argument("--cache", type=Path, default=Path("data/cache"))
    p.add_argument("--no-kafka", action="store_true", help="skip the runs on a real broker")
    p.add_argument("--repeat", type=int, default=4, help="times the analysis part is replayed for throughput")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the kafka runs (median)")
    args = p.parse_args()
    ref_df = car_loan(args.cache, "reference")
    ana_df = car_loan(args.cache, "analysis")
    reference = _reference(ref_df)
    analysis = _records(ana_df)
    onset = len(analysis) // 2

    clock = _Clock()
    sink = DriftSink(load_reference=lambda m, v: reference, clock=clock)
    alerts = _replay(sink, clock, analysis, args.rate)
    opened = [(i, a) for i, a in alerts if a["kind"] == OPENED]
    early = [(i, a) for i, a in opened if i <= onset]
    first = next(((i, a) for i, a in opened if i > onset), None)
    delay_events = first[0] - onset if first else -1
    delay_s = delay_events / args.rate if first else float("nan")
    print(f"delay run: {len(analysis)} analysis events at {args.rate:g}/s, {sink.evaluations} evaluations")
    print(f"  {'event':>6} {'alert':<22} {'column':<24} {'method':<14} score")
    for i, a in alerts:
        print(f"  {i:>6} {a['kind']:<22} {a['column']:<24} {a['method']:<14} {a['score']:.4g}")
    print(
        f"  first opening after row {onset}: +{delay_events} events, {delay_s:.1f} s; before it: {len(early)}"
    )

    clock = _Clock()
    stable = DriftSink(load_reference=lambda m, v: reference, clock=clock)
    ref_records = _records(ref_df)
    seed, replayed, stable_alerts = 0, 0, []
    while stable.evaluations < 100:
        shuffled = pl.Series(range(len(ref_records))).shuffle(seed=seed).to_list()
        stable_alerts += _replay(stable, clock, [ref_records[j] for j in shuffled], args.rate, replayed)
        replayed += len(ref_records)
        seed += 1
    false_stable = [a for _, a in stable_alerts if a["kind"] == OPENED]
    print(
        f"stable run: {replayed} reference events, {stable.evaluations} evaluations, "
        f"{len(false_stable)} opening alerts"
    )

    replay = analysis * args.repeat
    n = len(replay)
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, n, BATCH):
        for rec in replay[start : start + BATCH]:
            orjson.loads(rec.value)
    base = _rate(n, time.perf_counter() - t0, time.process_time() - c0)
    real = DriftSink(load_reference=lambda m, v: reference)
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, n, BATCH):
        real.add(TP, replay[start : start + BATCH])
    real.maybe_evaluate(force=True)
    mon = _rate(n, time.perf_counter() - t0, time.process_time() - c0)
    window = next(iter(real.windows.values()))
    t0 = time.perf_counter()
    window.evaluate()
    eval_ms = (time.perf_counter() - t0) * 1000
    kafka = dict.fromkeys(("raw", "monitor", "service"), (float("nan"), float("nan")))
    if not args.no_kafka:
        with tempfile.TemporaryDirectory() as tmp, KafkaCluster(1, work_dir=Path(tmp)) as cluster:
            kafka = asyncio.run(_kafka_rates(cluster.bootstrap_servers, replay, reference, args.rounds))
    print(f"throughput: {n} events (the analysis part x{args.repeat}), one process, shared machine")
    print(f"  {'path':<44} {'events/s':>10} {'events/cpu-s':>13}")
    rows = [
        ("baseline: decode only (orjson), no broker", base),
        (f"drift monitor sink, no broker ({real.evaluations} evaluations)", mon),
        ("kafka, 4 partitions: raw consumption", kafka["raw"]),
        ("kafka: consumption + drift monitor sink", kafka["monitor"]),
        ("kafka: the service (runner + sink, commits)", kafka["service"]),
    ]
    for name, (wall, cpu) in rows:
        print(f"  {name:<44} {wall:>10.0f} {cpu:>13.0f}")
    print(
        f"  one evaluation of a full window ({len(window)} events, {len(reference.kinds)} columns): "
        f"{eval_ms:.1f} ms"
    )
    if not args.no_kafka:
        print(
            f"  kafka rows: median of {args.rounds} alternating rounds, "
            "single-node Apache Kafka on the same machine"
        )
    print(
        f"delay_events={delay_events} delay_s={delay_s:.1f} "
        f"false_alarms={len(early) + len(false_stable)} evaluations={stable.evaluations} "
        f"events_per_s={mon[0]:.0f} events_per_cpu_s={mon[1]:.0f} "
        f"baseline_events_per_s={base[0]:.0f} baseline_events_per_cpu_s={base[1]:.0f} eval_ms={eval_ms:.1f} "
        + " ".join(
            f"kafka_{k}_events_per_s={kafka[k][0]:.0f} kafka_{k}_events_per_cpu_s={kafka[k][1]:.0f}"
            for k in ("raw", "monitor", "service")
        )
        + " target_events_per_s=50000"
    )


if __name__ == "__main__":
    main()
