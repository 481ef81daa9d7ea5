"""The inferstream command line: one tool for every process of the product."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.errors import InferstreamError
from common.kafka_cluster import KAFKA_VERSION
from inferstream import cli_commands as cmd


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    p = argparse.ArgumentParser(prog="inferstream", description=__doc__)
    p.add_argument("--version", action="version", version=f"inferstream {version('inferstream')}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole pipeline end to end on embedded defaults")
    d.add_argument("--rows", type=int, default=10_000, help="prediction calls to replay (max 50000)")
    d.add_argument("--concurrency", type=int, default=32, help="HTTP calls in flight at once")
    d.add_argument("--data-dir", type=Path, default=None, help="default: INFERSTREAM_DATA_DIR or ./data")
    d.add_argument("--skip-flows", action="store_true", help="skip the drift report and BI load at the end")
    d.set_defaults(func=cmd.cmd_demo)

    t = sub.add_parser("train", help="train the car-loan model and save a new artifact version")
    t.add_argument("--name", default="car-loan", help="model name (the artifact's folder under models/)")
    t.set_defaults(func=cmd.cmd_train)

    a = sub.add_parser("api", help="serve predictions (uvicorn)")
    a.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    a.set_defaults(func=cmd.cmd_api)

    ak = sub.add_parser("api-key", help="make an API key; prints the key and its INFERSTREAM_API_KEYS entry")
    ak.add_argument("--name", required=True, help="who the key is for (shown as client_id in events)")
    ak.add_argument(
        "--roles", default="predict,feedback", help="comma-separated: predict, feedback, synthetic, metrics"
    )
    ak.set_defaults(func=cmd.cmd_api_key)

    c = sub.add_parser("consume", help="run a consumer group")
    c.add_argument("sink", choices=["lake", "audit", "fraud", "drift"], help="which consumer group to run")
    c.set_defaults(func=cmd.cmd_consume)

    lk = sub.add_parser("lake", help="the lake's Delta tables: query, migrate")
    lksub = lk.add_subparsers(dest="lake_command", required=True)
    lq = lksub.add_parser("sql", help="run one DuckDB query; the tables are views named after them")
    lq.add_argument("sql", help="e.g. 'SELECT model_version, count(*) FROM inference_events GROUP BY 1'")
    lq.add_argument("--data-dir", type=Path, default=None, help="default: INFERSTREAM_DATA_DIR or ./data")
    lq.set_defaults(func=cmd.cmd_lake)
    lm = lksub.add_parser(
        "migrate", help="import a lake of hive-partitioned Parquet files (the old layout), exactly once"
    )
    lm.add_argument("--source", type=Path, default=None, help="old lake directory (default: <data dir>/lake)")
    lm.add_argument("--group", default="lake", help="the lake consumer group whose files these are")
    lm.add_argument("--data-dir", type=Path, default=None, help="default: INFERSTREAM_DATA_DIR or ./data")
    lm.set_defaults(func=cmd.cmd_lake)

    cp = sub.add_parser(
        "compact",
        help="maintain every lake table now: compact closed hours, delete partitions past the "
        "retention, vacuum, checkpoint (what the maintenance flow does daily; idempotent)",
    )
    cp.add_argument("--older-than-hours", type=float, default=1.0, help="only hours that ended this long ago")
    cp.add_argument(
        "--retention-days",
        type=_non_negative_int,
        default=None,
        help="delete partitions dated more than this many days ago; 0: delete none "
        "(default: INFERSTREAM_LAKE_RETENTION_DAYS, 30)",
    )
    cp.add_argument(
        "--vacuum-hours",
        type=_non_negative_int,
        default=None,
        help="delete data files unreferenced for this long (default: INFERSTREAM_LAKE_VACUUM_HOURS, 24)",
    )
    cp.set_defaults(func=cmd.cmd_compact)

    b = sub.add_parser(
        "broker",
        help="run a local broker: the embedded Tansu (in memory), or --kafka for an Apache Kafka cluster",
    )
    b.add_argument(
        "--kafka",
        action="store_true",
        help="a real Apache Kafka cluster in KRaft mode (needs Java 17+; Maven fetches the jars once)",
    )
    b.add_argument("--nodes", type=int, default=3, help="with --kafka: combined broker+controller nodes")
    b.add_argument(
        "--port", type=int, default=None, help="first broker port (--kafka: nodes take the next ones)"
    )
    b.add_argument("--partitions", type=int, default=4, help="partitions of the topics it creates")
    b.add_argument(
        "--data-dir", type=Path, default=None, help="--kafka keeps logs under DATA_DIR/kafka (default ./data)"
    )
    b.set_defaults(func=cmd.cmd_broker, kafka_version=KAFKA_VERSION)

    k = sub.add_parser("kafka", help="Kafka administration")
    ksub = k.add_subparsers(dest="kafka_command", required=True)
    kc = ksub.add_parser("create-topics", help="create the topics with their partition counts")
    kc.set_defaults(func=cmd.cmd_create_topics)
    ks = ksub.add_parser("status", help="topics, leaders, ISR, end offsets, group lag, lake size")
    ks_fmt = ks.add_mutually_exclusive_group()
    ks_fmt.add_argument("--json", action="store_true", help="machine-readable output")
    ks_fmt.add_argument("--prometheus", action="store_true", help="Prometheus text format (gauges)")
    ks.set_defaults(func=cmd.cmd_kafka_status)

    sc = sub.add_parser("schema", help="print (or --write) the event contract's JSON Schema")
    sc.add_argument("--write", action="store_true", help="write common/schemas/*.json instead of printing")
    sc.set_defaults(func=cmd.cmd_schema)

    fl = sub.add_parser("flows", help="scheduled Prefect flows: drift, BI load, maintenance")
    flsub = fl.add_subparsers(dest="flows_command", required=True)
    fls = flsub.add_parser(
        "serve",
        help="serve the deployments of prefect.yaml on their schedules",
        description="Serve the deployments of prefect.yaml on their schedules, on the Prefect server at "
        "PREFECT_API_URL (e.g. http://prefect:4200/api), or, when it is not set, on a local Prefect "
        "server started here with its UI (log in <data dir>/logs/prefect-server.log) and stopped on "
        "exit. Ctrl-C or SIGTERM pauses the deployments and exits.",
    )
    fls.add_argument(
        "--server-port",
        type=int,
        default=4200,
        help="without PREFECT_API_URL: the port of the local Prefect server and its UI (default 4200)",
    )
    fls.set_defaults(func=cmd.cmd_flows)
    fla = flsub.add_parser(
        "automation", help="create (or replace) the Prefect automation that POSTs to a webhook on drift"
    )
    fla.add_argument("--webhook-url", required=True, help="where the drift notifications are POSTed")
    fla.set_defaults(func=cmd.cmd_flows)
    flr = flsub.add_parser(
        "run",
        help="run one flow once, now (drift exits 0 no drift, 1 drift, 4 quality drop estimated, "
        "3 no data, 2 error)",
    )
    flr.add_argument("flow", choices=["drift", "bi", "maintenance"], help="which flow")
    flr.add_argument("--model", default="car-loan", help="drift: model name")
    flr.add_argument("--version", default="latest", help="drift: model version (default: the latest)")
    flr.add_argument(
        "--window", default="last_hour", choices=["last_hour", "last_day"], help="drift: last closed hour/day"
    )
    flr.add_argument("--start", default=None, help="drift: ISO-8601 start of an explicit window (with --end)")
    flr.add_argument("--end", default=None, help="drift: ISO-8601 end of the window (exclusive)")
    flr.add_argument("--json", action="store_true", help="print the result as JSON")
    flr.add_argument("--data-dir", type=Path, default=None, help="default: INFERSTREAM_DATA_DIR or ./data")
    flr.set_defaults(func=cmd.cmd_flows)
    return p


def main(argv: list[str] | None = None) -> int:
    from inferstream.logs import configure

    configure(os.environ.get("INFERSTREAM_LOG_LEVEL", "INFO"))
    # no usage reports from the Prefect server our flows start or talk to (offline hosts)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the temporary server `demo` and `flows run` start: on a fresh clone its first start
    # compiles Prefect's server modules and migrates a new database, past Prefect's 20 s
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InferstreamError as exc:
        print(f"inferstream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
