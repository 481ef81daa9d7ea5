"""What a restart of the embedded in-memory broker loses, measured end to end.

    .venv/bin/python bench/loss_windows.py [--runs 1] [--load-s 5] [--down-s 0.5]

Starts a Tansu broker, the API (default settings, 4 HTTP clients) and the lake lander
as real processes; after ``--load-s`` seconds of load it SIGKILLs the broker, starts a
new one on the same port ``--down-s`` later (topics created again), keeps the load on
for ``--load-s`` more, then waits for the lake. Prints, per run, how many predictions
were answered, how many landed in the lake and how many are missing. Tansu keeps
everything in memory: what it had acknowledged but the lander had not landed is gone
with it. Apache Kafka keeps its log on disk, so this loss is the embedded broker's only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPIC = "inference-events"


def _load(base: str, rows: list[dict], acked: list[str], stop: threading.Event, offset: int) -> None:
    with httpx.Client(base_url=base, timeout=10) as client:
        i = offset
        while not stop.is_set():
            try:
                r = client.post("/v1/predict", json={"features": rows[i % len(rows)]})
                if r.status_code == 200:
                    acked.append(r.json()["prediction_id"])
            except httpx.HTTPError:
                pass
            i += 7


def run_once(work: Path, rows: list[dict], version: str, load_s: float, down_s: float) -> str:
    from common.broker import EmbeddedBroker, free_port
    from common.topics import ensure_topics
    from inferstream.lakecheck import landing
    from inferstream.procs import Child, wait_ready

    port = free_port()
    broker = EmbeddedBroker(port=port, log_path=work / "tansu.log").start()
    bootstrap = broker.bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, {TOPIC: 4, f"{TOPIC}.dlq": 1}))
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    api_env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "INFERSTREAM_DATA_DIR": str(work),
        "INFERSTREAM_EVENTS_TOPIC": TOPIC,
        "INFERSTREAM_MODEL_NAME": "bench",
        "INFERSTREAM_MODEL_VERSION": version,
        "INFERSTREAM_PORT": str(api_port),
        "INFERSTREAM_AUTH_ENABLED": "false",
        "INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE": "false",  # Tansu has no idempotent producer
    }
    api = Child("api", ["api"], api_env, work / "api.log")
    lander_env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "INFERSTREAM_DATA_DIR": str(work),
        "INFERSTREAM_EVENTS_TOPIC": TOPIC,
        "INFERSTREAM_GROUP_ID": "lake",
        "INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE": "false",
    }
    lander = Child("lander", ["consume", "lake"], lander_env, work / "lander.log")
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_load, args=(base, rows, acked, stop, i)) for i in range(4)]
    try:
        wait_ready(f"{base}/readyz", api, timeout_s=180)
        for t in threads:
            t.start()
        time.sleep(load_s)
        before = len(acked)
        broker.kill()
        time.sleep(down_s)
        broker = EmbeddedBroker(port=port, log_path=work / "tansu.log").start()
        asyncio.run(ensure_topics(bootstrap, {TOPIC: 4, f"{TOPIC}.dlq": 1}))
        time.sleep(load_s)
        stop.set()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 90
        result = landing(work / "lake", acked)
        while result.missing and time.monotonic() < deadline:
            time.sleep(1.0)
            result = landing(work / "lake", acked)
    finally:
        stop.set()
        api.terminate()
        lander.terminate()
        broker.stop()
    early = landing(work / "lake", acked[:before])
    return (
        f"answered={len(acked)} answered_before_restart={before} landed={result.distinct} "
        f"missing={result.missing} (answered before the restart: {early.missing}) "
        f"duplicates={result.duplicates}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--load-s", type=float, default=5.0)
    p.add_argument("--down-s", type=float, default=0.5)
    args = p.parse_args()
    from inferstream.train import train_classifier
    from tests.conftest import breast_cancer_frame

    for run in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="inferstream-loss-"))
        df, features = breast_cancer_frame()
        path = train_classifier(
            df, features=features, target="target", name="bench", models_dir=work / "models"
        )
        rows = df.select([f.name for f in features]).to_dicts()
        print(f"run {run + 1}: broker restart ({args.down_s:g} s down): "
              f"{run_once(work, rows, path.name, args.load_s, args.down_s)}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
