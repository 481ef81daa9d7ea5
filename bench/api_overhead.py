"""What logging every prediction costs the API, measured with wrk.

    .venv/bin/python bench/api_overhead.py [--broker tansu|kafka|both] [--rounds 3] [--duration 10]

Starts the same app (uvicorn, one worker, a 32-feature logistic regression on
scikit-learn's breast-cancer data) five times, each on its own port, differing only in
what the request path does with the event:

    none         nothing (the baseline)
    inferstream  inferstream's publisher: queue hand-off, background batches, spool
    inferstream_confluent  the same publisher with its confluent-kafka (librdkafka) client
    inferstream_durable  the publisher in durable mode (INFERSTREAM_DURABLE): each event
                 written and fsynced to the spool (group commit) before the answer
    pg_sync      a synchronous PostgreSQL insert per request (the old prototype)
    aiokafka     ``await producer.send_and_wait()`` before the response
    ceiling      a POST that only validates the same body (no model, no event)

and drives each with wrk (Debian's package; installed here with apt-get if missing):
at saturation (32 connections) and at about half the no-logging throughput (a wrk
Lua ``delay`` per connection), interleaved, for several rounds. Prints a table of
rps, p50 and p99 (medians over rounds) with ratios and p99 deltas against ``none``
measured in the same round, and the server's CPU time per request (from /proc, all
threads: less sensitive than throughput to other load on a shared machine), then one
last line for inferstream's publisher.

The variants that talk to Kafka (inferstream, inferstream_confluent, aiokafka) run once
per broker chosen with ``--broker`` (bench/brokers.py), named ``variant@tansu`` (the
embedded Tansu) and ``variant@kafka`` (a 1-node Apache Kafka, idempotent producer on);
the baselines run once. The last line has ``<broker>_rps_ratio=…`` etc. per broker.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres, database test; override with
INFERSTREAM_BENCH_PG_DSN) and starts its own brokers (Java 17+ for Apache Kafka).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import brokers  # noqa: E402 - bench/ is on the path when this file runs

VARIANTS = ["none", "inferstream", "inferstream_confluent", "inferstream_durable", "pg_sync", "aiokafka"]
# run once per broker
KAFKA_VARIANTS = {"inferstream", "inferstream_confluent", "inferstream_durable", "aiokafka"}
TOPIC = "inference-events"
PG_SCHEMA = "bench_api_overhead"


# -- the servers ----------------------------------------------------------------------
def _train(data_dir: Path) -> tuple[str, dict[str, Any]]:
    import re as _re

    import polars as pl
    from sklearn.datasets import load_breast_cancer

    from common.artifact import FeatureSpec
    from inferstream.train import train_classifier

    raw = load_breast_cancer(as_frame=True).frame
    raw.columns = [_re.sub(r"\W+", "_", c.strip()) for c in raw.columns]
    df = pl.from_pandas(raw).with_columns(
        pl.when(pl.col("mean_radius") < 14)
        .then(pl.lit("small"))
        .otherwise(pl.lit("large"))
        .alias("size_band"),
        (pl.col("mean_texture") > 19).alias("high_texture"),
    )
    features = [FeatureSpec(c, "number") for c in raw.columns if c != "target"]
    features += [FeatureSpec("size_band", "category"), FeatureSpec("high_texture", "boolean")]
    path = train_classifier(
        df, features=features, target="target", name="bench", models_dir=data_dir / "models"
    )
    row = df.select([f.name for f in features]).row(0, named=True)
    return path.name, row


_PENDING: contextvars.ContextVar[list[asyncio.Future[Any]]] = contextvars.ContextVar("pending")


def _bench_publisher(variant: str, args: argparse.Namespace) -> Any:
    """The publisher a variant's app gets (None: the app builds its own, as in production)."""
    from aiokafka import AIOKafkaProducer

    from api.publisher import EventPublisher

    if variant in ("inferstream", "inferstream_confluent", "inferstream_durable"):
        return None
    common_kw: dict[str, Any] = dict(bootstrap_servers=args.bootstrap, topic=TOPIC)

    class NullPublisher(EventPublisher):
        async def start(self) -> None:
            self.broker_connected = True

        async def stop(self, drain_timeout_s: float = 0) -> None:
            return None

        def offer(self, key: bytes, value: bytes, topic: str | None = None) -> bool:
            self.stats.enqueued += 1
            return True

    class PgSyncPublisher(NullPublisher):
        """The prototype the product replaces: a blocking insert inside the request."""

        async def start(self) -> None:
            import psycopg

            self.conn = psycopg.connect(args.pg_dsn, autocommit=True)
            self.broker_connected = True

        def offer(self, key: bytes, value: bytes, topic: str | None = None) -> bool:
            self.conn.execute(
                f"INSERT INTO {PG_SCHEMA}.events (event_id, body) VALUES (%s, %s)",
                (key, value.decode()),
            )
            self.stats.enqueued += 1
            return True

    class AwaitingPublisher(NullPublisher):
        """``await send_and_wait`` in the request: the response waits for Kafka's ack
        (the middleware of ``_awaiting`` awaits what ``offer`` started before the response goes out)."""

        async def start(self) -> None:
            self.producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=0)
            await self.producer.start()
            self.broker_connected = True

        async def stop(self, drain_timeout_s: float = 0) -> None:
            await self.producer.stop()

        def offer(self, key: bytes, value: bytes, topic: str | None = None) -> bool:
            _PENDING.get().append(asyncio.ensure_future(self.producer.send_and_wait(TOPIC, value, key=key)))
            self.stats.enqueued += 1
            return True

    kinds = {"pg_sync": PgSyncPublisher, "aiokafka": AwaitingPublisher}
    return kinds.get(variant, NullPublisher)(**common_kw)


def _add_validate_only(app: Any, models_dir: Path, version: str) -> None:
    """``POST /bench/validate``: the request body validated against the model's features, nothing else."""
    from pydantic import ConfigDict, Field, create_model

    from api.model import features_model
    from common import artifact

    meta = artifact.read_metadata(artifact.resolve_dir(models_dir, "bench", version))
    features_cls = features_model(meta)

    validate_only_model = create_model(
        "ValidateOnly", __config__=ConfigDict(extra="forbid"), features=(features_cls, Field())
    )

    async def validate_only(body: Any) -> dict[str, bool]:
        return {"ok": True}

    # the annotation must be the class itself (this module has postponed annotations)
    validate_only.__annotations__["body"] = validate_only_model
    app.post("/bench/validate")(validate_only)


def _awaiting(inner: Any) -> Any:
    """An ASGI wrapper that holds each response until the sends its request started are acked."""

    async def awaiting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        pending: list[asyncio.Future[Any]] = []
        _PENDING.set(pending)

        async def _send(message: Any) -> None:
            if message["type"] == "http.response.start" and pending:
                await asyncio.gather(*pending)
            await send(message)

        await inner(scope, receive, _send)

    return awaiting


def _serve(args: argparse.Namespace) -> None:
    """One variant's server (run as a child process of the benchmark)."""
    import uvicorn

    from api.app import create_app
    from api.settings import ApiSettings

    variant, _, broker = args.variant.partition("@")
    settings = ApiSettings(
        data_dir=args.data_dir,
        spool_dir=args.data_dir / f"spool-{variant}-{broker}",
        kafka_bootstrap_servers=args.bootstrap,
        model_name="bench",
        model_version=args.version,
        auth_enabled=False,
        events_topic=TOPIC,
        kafka_client="confluent" if variant == "inferstream_confluent" else "aiokafka",
        kafka_enable_idempotence=broker != "tansu",  # Tansu has no idempotent producer
        durable=variant == "inferstream_durable",
    )
    app = create_app(settings, publisher=_bench_publisher(variant, args))
    _add_validate_only(app, settings.models_dir, args.version)
    asgi: Any = _awaiting(app) if variant == "aiokafka" else app
    uvicorn.run(asgi, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


# -- driving them ----------------------------------------------------------------------
def _ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing Debian's package (apt-get install -y wrk)", flush=True)
    cmd = ["apt-get", "install", "-y", "wrk"]
    if os.geteuid() != 0:
        cmd = ["sudo", *cmd]
    if subprocess.run(cmd, check=False).returncode != 0:
        subprocess.run(
            [cmd[0], "update"] if cmd[0] == "apt-get" else ["sudo", "apt-get", "update"], check=True
        )
        subprocess.run(cmd, check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is still missing after apt-get install")
    return found


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _parse_wrk(out: str) -> dict[str, float]:
    res: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        res[key] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["errors"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors:.*", out)
    res["socket_errors"] = 1.0 if m else 0.0
    return res


def _lua(path: Path, body: bytes, delay_ms: float | None) -> Path:
    lines = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        f"wrk.body = {orjson.dumps(body.decode()).decode()}",
    ]
    if delay_ms is not None:
        lines.append(f"function delay() return {delay_ms:.3f} end")
    path.write_text("\n".join(lines) + "\n")
    return path


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads (librdkafka's included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(
    wrk: str, url: str, script: Path, connections: int, duration: float, pid: int | None = None
) -> dict[str, float]:
    cpu0 = _cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    res = _parse_wrk(out)
    if pid and res["requests"]:
        # CPU the server spent per request: far less sensitive to other load on a shared
        # machine than throughput is
        res["cpu_us"] = (_cpu_seconds(pid) - cpu0) / res["requests"] * 1e6
    return res


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"server not ready at {url}:\n{log.read_text()[-3000:]}")


def _prepare_pg(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {PG_SCHEMA}")
        conn.execute(f"CREATE TABLE {PG_SCHEMA}.events (event_id bytea PRIMARY KEY, body jsonb NOT NULL)")


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    brokers.add_argument(p)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset (none is always run)"
    )
    p.add_argument(
        "--pg-dsn",
        default=os.environ.get("INFERSTREAM_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="none", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    p.add_argument("--version", default="1", help=argparse.SUPPRESS)
    return p


class Results:
    """Each (variant, load)'s wrk results, one per round, and their medians against 'none'."""

    def __init__(self, results: dict[tuple[str, str], list[dict[str, float]]]) -> None:
        self.results = results

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.results

    def __getitem__(self, key: tuple[str, str]) -> list[dict[str, float]]:
        return self.results[key]

    def per_round(self, v: str, load: str, key: str) -> list[float]:
        return [x[key] for x in self.results[(v, load)]]

    def _per_round_vs(self, v: str, load: str, key: str, other: str, op: Any) -> float:
        pairs = zip(self.per_round(v, load, key), self.per_round(other, load, key), strict=True)
        return _median([op(a, b) for a, b in pairs])

    def ratio(self, v: str, load: str) -> float:
        return self._per_round_vs(v, load, "rps", "none", lambda a, b: a / b)

    def delta(self, v: str, load: str) -> float:
        return self._per_round_vs(v, load, "p99", "none", lambda a, b: a - b)

    def cpu_delta(self, v: str, load: str) -> float:
        return self._per_round_vs(v, load, "cpu_us", "none", lambda a, b: a - b)

    def vs_ceiling(self, v: str) -> float:
        return self._per_round_vs(v, "saturation", "rps", "ceiling", lambda a, b: a / b)


def _measure(
    args: argparse.Namespace, names: list[str], variants: list[str], wrk: str, work: Path
) -> dict[tuple[str, str], list[dict[str, float]]]:
    """Start the brokers and one server per variant, then run wrk against each, round after round."""
    from common.broker import free_port
    from common.topics import ensure_topics

    version, row = _train(work)
    body = orjson.dumps({"features": row})
    stack = contextlib.ExitStack()
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        bootstrap: dict[str, str] = {}
        for b in names:
            print(f"starting {brokers.LABELS[b]}", flush=True)
            (work / b).mkdir()
            bootstrap[b] = stack.enter_context(brokers.running(b, work / b))
            asyncio.run(ensure_topics(bootstrap[b], {TOPIC: 4}))
        for v in variants:
            port = free_port()
            log = work / f"{v}.log"
            with open(log, "wb") as fh:
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--serve", "--variant", v, "--port", str(port),
                     "--data-dir", str(work), "--bootstrap", bootstrap[v.partition("@")[2] or names[0]],
                     "--version", version, "--pg-dsn", args.pg_dsn],
                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            servers[v] = (proc, port)
            _wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log)
        url = {v: f"http://127.0.0.1:{port}/v1/predict" for v, (_, port) in servers.items()}
        url["ceiling"] = f"http://127.0.0.1:{servers['none'][1]}/bench/validate"
        sat_script = _lua(work / "sat.lua", body, None)
        for v in [*variants, "ceiling"]:  # warm-up: JIT-free Python still has caches and pools
            _wrk(wrk, url[v], sat_script, args.connections, 2)
        base = _wrk(wrk, url["none"], sat_script, args.connections, args.duration)["rps"]
        half_rate = base / 2
        # each connection waits `delay` between requests: connections * 1000 / delay ≈ rate
        half_conns = 16
        half_script = _lua(work / "half.lua", body, half_conns * 1000.0 / half_rate)
        print(f"no-logging saturation {base:.0f} rps → half load target {half_rate:.0f} rps", flush=True)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for v in [*variants, "ceiling"]:
                pid = servers["none" if v == "ceiling" else v][0].pid
                res = _wrk(wrk, url[v], sat_script, args.connections, args.duration, pid)
                results.setdefault((v, "saturation"), []).append(res)
                print(
                    f"round {r + 1} {v:<28} saturation {res['rps']:8.0f} rps p99 {res['p99']:7.2f} ms",
                    flush=True,
                )
                if v == "ceiling":
                    continue
                res = _wrk(wrk, url[v], half_script, half_conns, args.duration, pid)
                results.setdefault((v, "half"), []).append(res)
                print(
                    f"round {r + 1} {v:<28} half       {res['rps']:8.0f} rps p99 {res['p99']:7.2f} ms",
                    flush=True,
                )
    finally:
        for proc, _ in servers.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc, _ in servers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        stack.close()
    return results


def _report(args: argparse.Namespace, names: list[str], variants: list[str], results: Results) -> None:
    print()
    print(
        f"{args.rounds} rounds x {args.duration:g} s, medians; ratios and deltas are per round against 'none'"
    )
    for b in names:
        print(f"@{b}: {brokers.LABELS[b]}")
    print(
        f"{'variant':<28} {'load':<10} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'rps/none':>9} {'p99 Δ ms':>9} {'cpu us/req':>10} {'cpu Δ us':>9} {'errors':>7}"
    )
    for v in [*variants, "ceiling"]:
        for load in ("saturation", "half"):
            if (v, load) not in results:
                continue
            rows = results[(v, load)]
            print(
                f"{v:<28} {load:<10} {_median([x['rps'] for x in rows]):8.0f} "
                f"{_median([x['p50'] for x in rows]):8.2f} {_median([x['p99'] for x in rows]):8.2f} "
                f"{results.ratio(v, load) if v != 'ceiling' else float('nan'):9.3f} "
                f"{results.delta(v, load) if v != 'ceiling' else float('nan'):9.2f} "
                f"{_median([x['cpu_us'] for x in rows]):10.0f} "
                f"{results.cpu_delta(v, load) if v != 'ceiling' else float('nan'):9.0f} "
                f"{sum(x['errors'] for x in rows):7.0f}"
            )
    last = []
    for b in names:
        v = f"inferstream@{b}"
        if (v, "saturation") not in results:
            continue
        last.append(
            f"{b}_rps_ratio={results.ratio(v, 'saturation'):.3f} "
            f"{b}_p99_delta_ms_half_load={results.delta(v, 'half'):.2f} "
            f"{b}_p99_delta_ms_saturation={results.delta(v, 'saturation'):.2f} "
            f"{b}_predict_vs_ceiling={results.vs_ceiling(v):.3f} "
            f"{b}_cpu_us_per_event_saturation={results.cpu_delta(v, 'saturation'):.0f}"
        )
        d = f"inferstream_durable@{b}"
        if (d, "saturation") in results:
            print(
                f"durable@{b}: rps_ratio={results.ratio(d, 'saturation'):.3f} "
                f"p99_delta_ms_half_load={results.delta(d, 'half'):.2f} "
                f"p99_delta_ms_saturation={results.delta(d, 'saturation'):.2f}"
            )
    if last:
        print(" ".join(last))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve:
        _serve(args)
        return 0
    names = brokers.selected(args.broker)
    variants = ["none"]
    for v in args.variants.split(","):
        if v in VARIANTS and v != "none":
            variants += [f"{v}@{b}" for b in names] if v in KAFKA_VARIANTS else [v]
    wrk = _ensure_wrk()
    _prepare_pg(args.pg_dsn)
    work = Path(tempfile.mkdtemp(prefix="inferstream-bench-"))
    results = _measure(args, names, variants, wrk, work)
    _report(args, names, variants, Results(results))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
