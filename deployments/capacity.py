"""Capacity on paper for inferstream at a target event rate, from measured rates.

    python deployments/capacity.py            # print the table for deployments/README.md
    python deployments/capacity.py --measure  # re-measure the event sizes used below

Edit ``INPUTS`` when a benchmark in bench/ measures a rate (and change its source), then
paste the output between the capacity markers of deployments/README.md;
tests/deployments/test_deploy_capacity.py fails while the README and this file disagree.
Every figure names its source: ``prototype`` (measured on the development machine in
the prototypes recorded in docs/brokers.md), ``measured here``
(``--measure`` below), or ``assumption`` (a planning choice, not a measurement).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Input:
    value: float
    unit: str
    source: str


INPUTS: dict[str, Input] = {
    "events_per_day": Input(1e9, "events/day", "target"),
    "peak_to_average": Input(3.0, "x", "assumption: daytime peak over the daily mean"),
    "headroom": Input(2.0, "x", "assumption: run at half the measured rate, to catch up after an outage"),
    "event_json_bytes": Input(435, "B/event", "prototype: 30-feature event, orjson (docs/brokers.md)"),
    "zstd_ratio": Input(3.8, "x", "measured here: zstd level 3, 500 events a batch, synthetic events"),
    "parquet_bytes": Input(
        113, "B/event", "measured here: polars -> Parquet zstd, synthetic random features"
    ),
    "produce_rate": Input(23_000, "events/s/process", "prototype: aiokafka produce, lz4 (docs/brokers.md)"),
    "consume_rate": Input(220_000, "events/s/process", "prototype: aiokafka consume, raw (docs/brokers.md)"),
    "lake_rate": Input(
        77_000,
        "events/s/process",
        "bench: bench/landing.py, Kafka -> Delta on s3:// (SeaweedFS), 1,134-byte events, lower of 2 runs",
    ),
    "evidently_s_per_m": Input(70, "s per 1M rows x 30 features", "prototype: Evidently drift report"),
    "ks_s_per_m": Input(3.5, "s per 1M rows x 30 features", "prototype: scipy KS on every feature"),
    "drift_sample_rows": Input(1e6, "rows/day/model", "assumption: drift runs on a uniform daily sample"),
    "retention_days": Input(7, "days", "deployments/k8s/topics.yaml retention.ms"),
    "replication_factor": Input(3, "copies", "deployments/k8s/kafka.yaml"),
    "min_partitions": Input(
        12, "partitions", "assumption: room to triple the consumers without repartitioning"
    ),
}


def _v(name: str) -> float:
    return INPUTS[name].value


def rows() -> list[tuple[str, str, str]]:
    """(quantity, arithmetic, result) for the table."""
    day = 86_400
    avg = _v("events_per_day") / day
    peak = avg * _v("peak_to_average")
    need = peak * _v("headroom")
    lake = math.ceil(need / _v("lake_rate"))
    consume = math.ceil(need / _v("consume_rate"))
    produce = math.ceil(need / _v("produce_rate"))
    partitions = max(int(_v("min_partitions")), 3 * lake)
    mb_in = peak * _v("event_json_bytes") / _v("zstd_ratio") / 1e6
    kafka_disk_tb = (
        _v("events_per_day")
        * _v("retention_days")
        * _v("event_json_bytes")
        / _v("zstd_ratio")
        * _v("replication_factor")
        / 1e12
    )
    brokers = max(3, int(_v("replication_factor")))
    lake_gb = _v("events_per_day") * _v("parquet_bytes") / 1e9
    full_h = _v("events_per_day") / 1e6 * _v("evidently_s_per_m") / 3600
    ks_min = _v("events_per_day") / 1e6 * _v("ks_s_per_m") / 60
    sample_s = _v("drift_sample_rows") / 1e6 * _v("evidently_s_per_m")
    return [
        (
            "mean / peak rate",
            f"1e9 / 86,400 s = {avg:,.0f}/s; x {_v('peak_to_average'):g} peak",
            f"{peak:,.0f} events/s",
        ),
        ("rate to provision", f"{peak:,.0f} x {_v('headroom'):g} headroom", f"{need:,.0f} events/s"),
        ("lake consumer processes", f"{need:,.0f} / {_v('lake_rate'):,.0f} per process", f"{lake}"),
        (
            "consumer processes, raw read bound",
            f"{need:,.0f} / {_v('consume_rate'):,.0f} per process",
            f"{consume} per group",
        ),
        (
            "API processes, publish bound",
            f"{need:,.0f} / {_v('produce_rate'):,.0f} per process",
            f"{produce} (model CPU comes on top)",
        ),
        (
            "partitions of inference-events",
            f"max({_v('min_partitions'):g}, 3 x {lake} lake processes)",
            f"{partitions}",
        ),
        (
            "Kafka ingress at peak",
            f"{peak:,.0f} x {_v('event_json_bytes'):g} B / {_v('zstd_ratio'):g} zstd",
            f"{mb_in:,.1f} MB/s (x{_v('replication_factor'):g} replicated)",
        ),
        (
            "Kafka disk, all brokers",
            f"1e9 x {_v('retention_days'):g} d x {_v('event_json_bytes'):g} B"
            f" / {_v('zstd_ratio'):g} x RF {_v('replication_factor'):g}",
            f"{kafka_disk_tb:,.1f} TB",
        ),
        (
            "brokers",
            f"max(3, RF {_v('replication_factor'):g}); {mb_in:,.1f} MB/s is far below one broker's disk",
            f"{brokers}, combined broker/controller",
        ),
        ("lake growth per day", f"1e9 x {_v('parquet_bytes'):g} B", f"{lake_gb:,.0f} GB/day"),
        (
            "drift flow, whole day, Evidently",
            f"1e9 / 1e6 x {_v('evidently_s_per_m'):g} s",
            f"{full_h:,.1f} h (too slow: sample)",
        ),
        ("drift flow, whole day, KS only", f"1e9 / 1e6 x {_v('ks_s_per_m'):g} s", f"{ks_min:,.0f} min"),
        (
            "drift flow, daily sample, Evidently",
            f"{_v('drift_sample_rows'):,.0f} rows / 1e6 x {_v('evidently_s_per_m'):g} s",
            f"{sample_s:,.0f} s per model",
        ),
    ]


def render() -> str:
    lines = ["| quantity | arithmetic | result |", "| --- | --- | --- |"]
    lines += [f"| {q} | {a} | {r} |" for q, a, r in rows()]
    lines += ["", "| input | value | source |", "| --- | --- | --- |"]
    lines += [f"| {k} | {i.value:,.6g} {i.unit} | {i.source} |" for k, i in INPUTS.items()]
    return "\n".join(lines) + "\n"


def measure(n: int = 200_000) -> str:
    """Re-measure zstd_ratio and parquet_bytes on synthetic 30-feature events."""
    import io
    import uuid

    import numpy as np
    import orjson
    import polars as pl
    import pyarrow as pa

    rng = np.random.default_rng(7)
    cats = ["salaried", "self-employed", "retired", "student"]
    events = []
    for i in range(n):
        features: dict[str, object] = {f"num_{j}": round(float(rng.normal(50, 15)), 3) for j in range(20)}
        features |= {f"int_{j}": int(rng.integers(0, 1000)) for j in range(6)}
        features |= {f"cat_{j}": cats[int(rng.integers(0, 4))] for j in range(4)}
        events.append(
            {
                "event_id": str(uuid.uuid4()),
                "event_time": f"2025-01-01T00:00:{i % 60:02d}Z",
                "model_name": "car-loan",
                "model_version": "3",
                "prediction": int(rng.integers(0, 2)),
                "score": float(rng.random()),
                "latency_ms": float(rng.random()),
                "status": "ok",
                **features,
            }
        )
    encoded = [orjson.dumps(e) for e in events]
    raw = sum(map(len, encoded)) / n
    codec = pa.Codec("zstd", compression_level=3)
    packed = sum(len(codec.compress(b"".join(encoded[i : i + 500]), asbytes=True)) for i in range(0, n, 500))
    buf = io.BytesIO()
    pl.DataFrame(events).write_parquet(buf, compression="zstd")
    return (
        f"json {raw:.0f} B/event, zstd ratio {raw / (packed / n):.2f}, "
        f"parquet {len(buf.getvalue()) / n:.0f} B/event ({n:,} synthetic events)"
    )


if __name__ == "__main__":
    sys.stdout.write((measure() + "\n") if "--measure" in sys.argv else render())
