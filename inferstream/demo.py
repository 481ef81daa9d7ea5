"""``inferstream demo``: the whole product end to end on embedded defaults.

Broker (embedded Tansu unless KAFKA_BOOTSTRAP_SERVERS is set) → train the car-loan model
→ API and lake lander as separate processes → replay the analysis rows as HTTP
prediction calls → wait until the lake holds every event → summary from DuckDB.
Everything it starts it stops, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import polars as pl
from tqdm import tqdm

from common import lake
from common.broker import EmbeddedBroker, free_port
from common.settings import CommonSettings
from common.topics import ensure_topics
from inferstream.datasets import CAR_LOAN_FEATURES, CAR_LOAN_TARGET, car_loan
from inferstream.lakecheck import lake_files, landing
from inferstream.procs import Child, wait_ready
from inferstream.train import train_classifier

MODEL_NAME = "car-loan"


@dataclass
class DemoOptions:
    rows: int = 10_000
    concurrency: int = 32
    data_dir: Path | None = None
    land_timeout_s: float = 180.0


def _feature_rows(df: pl.DataFrame, n: int) -> list[dict[str, Any]]:
    cols = [f.name for f in CAR_LOAN_FEATURES]
    return df.head(n).select(cols).to_dicts()


async def _replay(
    base_url: str, rows: list[dict[str, Any]], concurrency: int
) -> tuple[list[str], list[float], int]:
    ids: list[str] = []
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for r in rows:
        queue.put_nowait(r)
    bar = tqdm(total=len(rows), desc="predictions", unit="req", smoothing=0.1)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            nonlocal failures
            while True:
                try:
                    features = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                start = time.perf_counter()
                resp = await client.post("/v1/predict", json={"features": features})
                latencies.append(time.perf_counter() - start)
                if resp.status_code == 200:
                    ids.append(resp.json()["prediction_id"])
                else:
                    failures += 1
                bar.update(1)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    bar.close()
    return ids, latencies, failures


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo the way Ctrl-C does


def run_demo(opts: DemoOptions) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    settings = CommonSettings(**({"data_dir": opts.data_dir} if opts.data_dir else {}))
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    data_dir, lake_dir = settings.data_dir, settings.lake_dir
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    broker: EmbeddedBroker | None = None
    children: list[Child] = []
    try:
        if settings.kafka_bootstrap_servers:
            bootstrap = settings.kafka_bootstrap_servers
            print(f"[1/6] using Kafka at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
        else:
            broker = EmbeddedBroker(log_path=logs / "broker.log").start()
            bootstrap = broker.bootstrap_servers
            print(f"[1/6] embedded broker (Tansu, in memory) on {bootstrap}")
        asyncio.run(
            ensure_topics(
                bootstrap,
                {
                    settings.events_topic: settings.events_partitions,
                    settings.feedback_topic: settings.events_partitions,
                },
            )
        )

        print("[2/6] training the car-loan model on the nannyml reference data")
        reference = car_loan(data_dir / "cache", "reference")
        model_dir = train_classifier(
            reference,
            features=CAR_LOAN_FEATURES,
            target=CAR_LOAN_TARGET,
            name=MODEL_NAME,
            models_dir=settings.models_dir,
            training_data="nannyml synthetic_car_loan_reference.csv",
        )
        version = model_dir.name
        print(f"      artifact: {model_dir}")

        port = free_port()
        env = {
            "INFERSTREAM_DATA_DIR": str(data_dir),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "INFERSTREAM_PORT": str(port),
            "INFERSTREAM_MODEL_NAME": MODEL_NAME,
            "INFERSTREAM_MODEL_VERSION": version,
            # a local demo on loopback: API keys (on by default) would only get in the way
            "INFERSTREAM_AUTH_ENABLED": "false",
        }
        print("[3/6] starting the API and the lake lander")
        api = Child("api", ["api"], env, logs / "api.log")
        children.append(api)
        lander = Child("lander", ["consume", "lake"], env, logs / "lander.log")
        children.append(lander)
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(f"{base_url}/readyz", api)

        analysis = car_loan(data_dir / "cache", "analysis")
        n = min(opts.rows, analysis.height)
        print(f"[4/6] replaying {n} analysis rows as prediction calls ({opts.concurrency} concurrent)")
        t0 = time.monotonic()
        ids, latencies, failures = asyncio.run(
            _replay(base_url, _feature_rows(analysis, n), opts.concurrency)
        )
        replay_s = time.monotonic() - t0

        print("[5/6] waiting until the lake holds every event")
        deadline = time.monotonic() + opts.land_timeout_s
        result = landing(lake_dir, ids)
        while result.missing and time.monotonic() < deadline:
            if not lander.alive():
                print(f"the lander died:\n{lander.tail()}")
                break
            time.sleep(1.0)
            result = landing(lake_dir, ids)

        files, size = lake_files(lake_dir)
        lat = np.array(latencies) * 1000
        con = duckdb.connect()
        src = (
            lake.duckdb_source(lake_dir)
            if files
            else "(SELECT NULL::VARCHAR AS model_name, NULL::VARCHAR AS model_version, NULL::DOUBLE AS latency_ms, NULL::VARCHAR AS prediction)"
        )
        model_lat = con.execute(
            f"SELECT quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.99) FROM {src} "
            f"WHERE model_name = ? AND model_version = ?",
            [MODEL_NAME, version],
        ).fetchone()
        mix = con.execute(
            f"SELECT prediction, count(*) FROM {src} "
            f"WHERE model_name = ? AND model_version = ? GROUP BY 1 ORDER BY 1",
            [MODEL_NAME, version],
        ).fetchall()
        con.close()
        print("[6/6] summary (computed from the lake with DuckDB)")
        print(
            f"  predictions answered : {len(ids)} ({failures} failed) in {replay_s:.1f}s = {len(ids) / replay_s:.0f}/s"
        )
        print(f"  events landed        : {result.rows}")
        print(f"  events missing       : {result.missing}")
        print(f"  duplicates           : {result.duplicates}")
        if len(lat):
            print(
                f"  HTTP latency         : p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms"
            )
        if model_lat and model_lat[0] is not None:
            print(f"  model latency        : p50 {model_lat[0]:.2f} ms, p99 {model_lat[1]:.2f} ms")
        print(f"  prediction mix       : {', '.join(f'{p}: {c}' for p, c in mix)}")
        print(
            f"  lake                 : {lake.table_dir(lake_dir)} ({files} Parquet files, {size / 1e6:.1f} MB)"
        )
        print(f"  model artifact       : {model_dir}")
        print(f"  logs                 : {logs}")
        print(f"  wall time            : {time.monotonic() - started:.1f}s")
        ok = result.missing == 0 and result.duplicates == 0 and failures == 0 and len(ids) == n
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything")
        return 130
    finally:
        for child in reversed(children):
            child.terminate()
        if broker is not None:
            broker.stop()
