"""``inferstream demo``: the whole product end to end on embedded defaults.

Broker (embedded Tansu unless KAFKA_BOOTSTRAP_SERVERS is set) → train the car-loan model
→ API and lake lander as separate processes → replay analysis rows as HTTP prediction
calls → feed their delayed labels back → wait until the lake holds every event and label
→ summary from DuckDB → drift report and BI load, once. Everything it starts it stops,
also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
from tqdm import tqdm

from common import lake, lakesql
from common.broker import EmbeddedBroker, free_port
from common.settings import CommonSettings, ToolSettings
from common.topics import ensure_topics
from inferstream.datasets import CAR_LOAN_FEATURES, CAR_LOAN_TARGET, car_loan
from inferstream.lakecheck import Landing, lake_files, landing
from inferstream.procs import Child, wait_ready
from inferstream.train import train_classifier

MODEL_NAME = "car-loan"
FEEDBACK_TABLE = lake.FEEDBACK_TABLE
STEPS = 8


@dataclass
class DemoOptions:
    rows: int = 10_000
    concurrency: int = 32
    data_dir: Path | None = None
    land_timeout_s: float = 180.0
    drift: bool = True


@dataclass
class Posted:
    status: int
    body: dict[str, Any]
    latency_s: float


def _step(n: int, text: str) -> None:
    print(f"[{n}/{STEPS}] {text}", flush=True)


def _sample(analysis: pl.DataFrame, n: int) -> pl.DataFrame:
    """``n`` rows spread evenly over the whole analysis period, in time order: the
    car-loan analysis data drifts in its second half, so the replay must reach it."""
    step = max(1, analysis.height // n)
    return analysis.sort("timestamp").gather_every(step).head(n)


async def _post_all(
    base_url: str, path: str, bodies: list[dict[str, Any]], concurrency: int, desc: str
) -> list[Posted]:
    """POST every body with ``concurrency`` requests in flight; results in input order."""
    results: list[Posted | None] = [None] * len(bodies)
    next_index = 0
    bar = tqdm(total=len(bodies), desc=desc, unit="req", smoothing=0.1)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                start = time.perf_counter()
                resp = await client.post(path, json=bodies[i])
                results[i] = Posted(resp.status_code, resp.json(), time.perf_counter() - start)
                bar.update(1)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    bar.close()
    return [r for r in results if r is not None]


def _wait_for(lake_dir: lake.Lake, ids: list[str], table: str, lander: Child, deadline: float) -> Landing:
    result = landing(lake_dir, ids, table)
    while result.missing and time.monotonic() < deadline:
        if not lander.alive():
            print(f"the lander died:\n{lander.tail()}")
            break
        time.sleep(1.0)
        result = landing(lake_dir, ids, table)
    return result


def _model_stats(where: lake.Lake, version: str) -> tuple[Any, list[tuple[Any, ...]]]:
    con = lakesql.connect(where)
    try:
        src = lake.EVENTS_TABLE
        cond = "WHERE model_name = ? AND model_version = ?"
        latency = con.execute(
            f"SELECT quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.99) FROM {src} {cond}",
            [MODEL_NAME, version],
        ).fetchone()
        mix = con.execute(
            f"SELECT prediction, count(*) FROM {src} {cond} GROUP BY 1 ORDER BY 1", [MODEL_NAME, version]
        ).fetchall()
    finally:
        con.close()
    return latency, mix


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo the way Ctrl-C does


def run_demo(opts: DemoOptions) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    settings = CommonSettings(data_dir=opts.data_dir) if opts.data_dir else CommonSettings()
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    data_dir, lake_dir = settings.data_dir, settings.lake()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    broker: EmbeddedBroker | None = None
    children: list[Child] = []
    try:
        bootstrap, broker = _broker(settings, logs)
        topics = {
            settings.events_topic: settings.events_partitions,
            settings.feedback_topic: settings.events_partitions,
        }
        asyncio.run(ensure_topics(bootstrap, topics))

        _step(2, "training the car-loan model on the nannyml reference data")
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
        if broker is not None:
            env["INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE"] = "false"  # Tansu has no idempotent producer
        _step(3, "starting the API and the lake lander")
        api = Child("api", ["api"], env, logs / "api.log")
        children.append(api)
        lander = Child("lander", ["consume", "lake"], env, logs / "lander.log")
        children.append(lander)
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(f"{base_url}/readyz", api)

        rows = _sample(car_loan(data_dir / "cache", "analysis"), opts.rows)
        n = rows.height
        _step(4, f"replaying {n} analysis rows as prediction calls ({opts.concurrency} concurrent)")
        features = rows.select([f.name for f in CAR_LOAN_FEATURES]).to_dicts()
        t0 = time.monotonic()
        answers = asyncio.run(
            _post_all(
                base_url, "/v1/predict", [{"features": f} for f in features], opts.concurrency, "predictions"
            )
        )
        replay_s = time.monotonic() - t0
        ok = [(i, a) for i, a in enumerate(answers) if a.status == 200]
        ids = [a.body["prediction_id"] for _, a in ok]
        failures = n - len(ok)

        _step(5, "feeding the delayed labels back (POST /v1/feedback)")
        labels = rows[CAR_LOAN_TARGET].to_list()
        acks = asyncio.run(
            _post_all(
                base_url,
                "/v1/feedback",
                [{"prediction_id": a.body["prediction_id"], "label": labels[i]} for i, a in ok],
                opts.concurrency,
                "feedback",
            )
        )
        feedback_failures = sum(1 for a in acks if a.status != 202)

        _step(6, "waiting until the lake holds every event and label")
        deadline = time.monotonic() + opts.land_timeout_s
        result = _wait_for(lake_dir, ids, lake.EVENTS_TABLE, lander, deadline)
        fed_back = _wait_for(lake_dir, ids, FEEDBACK_TABLE, lander, deadline)

        _step(7, "summary (computed from the lake with DuckDB)")
        print(
            f"  predictions answered : {len(ids)} ({failures} failed) in {replay_s:.1f}s"
            f" = {len(ids) / replay_s:.0f}/s"
        )
        print(f"  events landed        : {result.rows}")
        print(f"  events missing       : {result.missing}")
        print(f"  duplicates           : {result.duplicates}")
        print(
            f"  labels fed back      : {len(acks) - feedback_failures} sent, {fed_back.distinct} landed,"
            f" {fed_back.missing} missing, {fed_back.duplicates} duplicates"
        )
        _print_latency(answers, opts.concurrency)
        _print_lake(lake_dir, version)
        print(f"  model artifact       : {model_dir}")
        print(f"  logs                 : {logs}")
        landed_ok = result.missing == 0 and result.duplicates == 0 and failures == 0 and len(ids) == n
        landed_ok = landed_ok and fed_back.missing == 0 and fed_back.duplicates == 0 and not feedback_failures
        for child in reversed(children):
            child.terminate()
        if broker is not None:
            broker.stop()
            broker = None

        if opts.drift:
            _step(8, "drift report and BI load (Prefect flows, once)")
            _run_flows(data_dir, version)
        print(f"  wall time            : {time.monotonic() - started:.1f}s")
        return 0 if landed_ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything")
        return 130
    finally:
        for child in reversed(children):
            child.terminate()
        if broker is not None:
            broker.stop()


def _broker(settings: CommonSettings, logs: Path) -> tuple[str, EmbeddedBroker | None]:
    """Step 1: Kafka at KAFKA_BOOTSTRAP_SERVERS, else an embedded broker (started here)."""
    if settings.kafka_bootstrap_servers:
        bootstrap = settings.kafka_bootstrap_servers
        _step(1, f"using Kafka at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
        return bootstrap, None
    broker = EmbeddedBroker(log_path=logs / "broker.log", binary=ToolSettings().tansu_bin).start()
    _step(1, f"embedded broker (Tansu, in memory) on {broker.bootstrap_servers}")
    return broker.bootstrap_servers, broker


def _print_latency(answers: list[Posted], concurrency: int) -> None:
    lat = np.array([a.latency_s for a in answers]) * 1000
    if len(lat):
        print(
            f"  HTTP latency         : p50 {np.percentile(lat, 50):.1f} ms,"
            f" p99 {np.percentile(lat, 99):.1f} ms (client side, {concurrency} in flight)"
        )


def _print_lake(lake_dir: lake.Lake, version: str) -> None:
    """The model's latency and prediction mix as the lake holds them, and the lake's size."""
    files, size = lake_files(lake_dir)
    if files:
        model_lat, mix = _model_stats(lake_dir, version)
        if model_lat and model_lat[0] is not None:
            print(f"  model latency        : p50 {model_lat[0]:.2f} ms, p99 {model_lat[1]:.2f} ms")
        print(f"  prediction mix       : {', '.join(f'{p}: {c}' for p, c in mix)}")
    where = f"{lake_dir.uri(lake.EVENTS_TABLE)} (Delta table: {files} live files, {size / 1e6:.1f} MB)"
    print(f"  lake                 : {where}")


def _run_flows(data_dir: Path, version: str) -> None:
    # Prefect reads its settings at import: keep its state under the data directory,
    # quiet, and without telemetry (this machine may be offline)
    os.environ.setdefault("PREFECT_HOME", str(data_dir / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.bi_load import run_bi_load
    from flows.drift import run_drift

    outcome = run_drift(data_dir, model_name=MODEL_NAME, model_version=version)
    verdict = "DRIFT" if outcome.drift else "no drift"
    print(f"  drift verdict        : {verdict}: {outcome.reason}")
    print(f"  drift report         : {outcome.report_html or outcome.report_url}")
    if outcome.report_html is not None:
        print(f"  all reports          : {outcome.report_html.parent.parent.parent / 'index.html'}")
    bi = run_bi_load(data_dir)
    print(
        f"  BI tables            : {bi.event_rows} events, {bi.feedback_rows} labels, {bi.quality_rows}"
        f" quality rows loaded ({bi.files_loaded} new files) into {data_dir / 'warehouse.duckdb'}"
    )
