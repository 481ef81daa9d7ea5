"""The inferstream command line's commands (``inferstream.cli`` parses the arguments):
each reads its settings from the environment, as an entry point does, and returns the
exit code."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from common.errors import ConfigError, InferstreamError
from common.kafka_cluster import KafkaCluster

if TYPE_CHECKING:
    from common.broker import EmbeddedBroker


def cmd_broker(args: argparse.Namespace) -> int:
    from common.events import EVENTS_TOPIC, FEEDBACK_TOPIC
    from common.topics import ensure_topics

    broker: KafkaCluster | EmbeddedBroker
    if args.kafka:
        broker = _start_kafka_cluster(args)
    else:
        from common.broker import EmbeddedBroker
        from common.settings import ToolSettings

        broker = EmbeddedBroker(port=args.port, binary=ToolSettings().tansu_bin).start()
    try:
        bootstrap = broker.bootstrap_servers
        asyncio.run(
            ensure_topics(bootstrap, {EVENTS_TOPIC: args.partitions, FEEDBACK_TOPIC: args.partitions})
        )
        if isinstance(broker, KafkaCluster):  # args.kafka
            print(f"Apache Kafka {args.kafka_version} (KRaft, {args.nodes} nodes) on {bootstrap}")
            print(f"  logs and data: {broker.work_dir}")
            print(f"  export KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        else:
            print(f"Tansu (in-memory Kafka-protocol broker) on {bootstrap}")
            print(f"  export KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
            print("  export INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE=false   # Tansu has no idempotent producer")
        sys.stdout.flush()
        stop = False

        def _stop(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not stop:
            time.sleep(0.2)
    finally:
        broker.stop()
    return 0


def _start_kafka_cluster(args: argparse.Namespace) -> KafkaCluster:
    import shutil

    from common.kafka_cluster import java_executable
    from common.settings import CommonSettings, ToolSettings

    java = java_executable(java_home=ToolSettings().java_home)  # a clear ConfigError before any fetch
    data_dir = args.data_dir or CommonSettings().data_dir
    work_dir = (data_dir / "kafka").resolve()
    if work_dir.exists():
        shutil.rmtree(work_dir)  # a fresh cluster each time: ports and cluster id are new
    print(f"starting Apache Kafka {args.kafka_version} ({args.nodes} nodes); the first run fetches its jars")
    sys.stdout.flush()
    cluster = KafkaCluster(args.nodes, work_dir=work_dir, java=java, base_port=args.port)
    return cluster.start()


def cmd_create_topics(args: argparse.Namespace) -> int:
    from common.settings import CommonSettings
    from common.topics import ensure_topics

    s = CommonSettings()
    asyncio.run(
        ensure_topics(
            s.require_bootstrap(),
            {s.events_topic: s.events_partitions, s.feedback_topic: s.events_partitions},
        )
    )
    print(f"topics ready on {s.kafka_bootstrap_servers}: {s.events_topic}, {s.feedback_topic}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from common.settings import CommonSettings
    from inferstream.datasets import CAR_LOAN_FEATURES, CAR_LOAN_TARGET, car_loan
    from inferstream.train import train_classifier

    s = CommonSettings()
    df = car_loan(s.data_dir / "cache", "reference")
    path = train_classifier(
        df,
        features=CAR_LOAN_FEATURES,
        target=CAR_LOAN_TARGET,
        name=args.name,
        models_dir=s.models_dir,
        training_data="nannyml synthetic_car_loan_reference.csv",
    )
    print(f"model artifact written to {path}")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.settings import ApiSettings

    s = ApiSettings()
    s.require_bootstrap()
    create_app(s)  # a wrong setting fails here, with its name, not in every worker
    if args.workers > 1 and s.prometheus_multiproc_dir is None:
        # several processes: prometheus_client must write values to files that /metrics sums
        import os
        import shutil

        mp = (s.data_dir / "prometheus" / str(s.port)).resolve()
        shutil.rmtree(mp, ignore_errors=True)
        mp.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mp)
    uvicorn.run(
        "api.app:create_app_from_env",
        factory=True,
        host=s.host,
        port=s.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=20,
    )
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    import json

    from api.auth import ROLES, hash_key, new_key

    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    unknown = set(roles) - set(ROLES)
    if unknown:
        print(f"unknown roles {sorted(unknown)}; choose from {', '.join(ROLES)}", file=sys.stderr)
        return 2
    key = new_key()
    print(f"key (give it to the client; it is not stored): {key}")
    print("INFERSTREAM_API_KEYS entry:")
    print(json.dumps({"name": args.name, "sha256": hash_key(key), "roles": roles}))
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from consumers.service import serve, tune_gc
    from consumers.settings import ConsumerSettings

    settings = ConsumerSettings()
    tune_gc(settings.gc_gen0_threshold)
    asyncio.run(serve(settings, args.sink))
    return 0


def cmd_kafka_status(args: argparse.Namespace) -> int:
    import json

    from prometheus_client import generate_latest

    from consumers.settings import ConsumerSettings
    from consumers.status import collect, registry, render

    s = ConsumerSettings()
    status = asyncio.run(collect(s.require_bootstrap(), s.lake()))
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
    elif args.prometheus:
        print(generate_latest(registry(status)).decode(), end="")
    else:
        print(render(status))
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    """The maintenance flow's lake part, by hand: compaction of closed hours, deletion of
    partitions past the retention, vacuum and a checkpoint, for every table."""
    from datetime import UTC, datetime, timedelta

    from common import lake, lakemaint
    from flows.settings import FlowSettings

    settings = FlowSettings()
    days = settings.lake_retention_days if args.retention_days is None else args.retention_days
    vacuum_hours = settings.lake_vacuum_hours if args.vacuum_hours is None else args.vacuum_hours
    now = datetime.now(UTC)
    cutoff = None if days == 0 else now.date() - timedelta(days=days)
    for table in lake.TABLES:
        done = lakemaint.maintain(
            settings.lake(),
            table,
            compact_before=now - timedelta(hours=args.older_than_hours),
            expire_before=cutoff,
            vacuum_hours=vacuum_hours,
        )
        if done is None:
            print(f"{table}: no table yet")
            continue
        kept = "no retention" if cutoff is None else f"{done.rows_expired} rows dated before {cutoff} deleted"
        print(
            f"{table}: {done.files_removed} files compacted into {done.files_added}; {kept}; "
            f"{done.files_vacuumed} unreferenced files vacuumed; version {done.version_before} -> "
            f"{done.version_after}" + "".join(f"; {note}" for note in done.notes)
        )
    return 0


def cmd_lake(args: argparse.Namespace) -> int:
    from common.settings import CommonSettings

    settings = CommonSettings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    if args.lake_command == "sql":
        from common.lakesql import query

        print(query(settings.lake(), args.sql))
        return 0
    from common.lakemigrate import migrate

    source = args.source or settings.lake_dir
    for line in migrate(source, settings.lake(), group=args.group):
        print(line)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from common.events import FEEDBACK_SCHEMA_PATH, SCHEMA_PATH, feedback_json_schema_text, json_schema_text

    if args.write:
        SCHEMA_PATH.write_text(json_schema_text())
        FEEDBACK_SCHEMA_PATH.write_text(feedback_json_schema_text())
        print(f"wrote {SCHEMA_PATH} and {FEEDBACK_SCHEMA_PATH}")
    else:
        print(json_schema_text(), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from inferstream.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            rows=args.rows, concurrency=args.concurrency, data_dir=args.data_dir, drift=not args.skip_flows
        )
    )


def _check_flow_args(args: argparse.Namespace) -> None:
    """What ``flows run`` can check without Prefect (whose start-up takes seconds): the
    model exists, the window parses. A mistake is one ConfigError line naming the fix."""
    from common import artifact
    from common.settings import CommonSettings
    from flows.window import resolve

    try:
        resolve(args.window, args.start, args.end)
    except InferstreamError as exc:
        raise ConfigError(f"--{exc} (example: --start 2026-03-01T00:00Z --end 2026-03-02T00:00Z)") from exc
    models_dir = CommonSettings(**({"data_dir": args.data_dir} if args.data_dir else {})).models_dir
    known = []
    if models_dir.is_dir():
        known = sorted(p.name for p in models_dir.iterdir() if artifact.versions(models_dir, p.name))
    if args.model not in known:
        have = f"models there: {', '.join(known)}" if known else "none there: run `inferstream train`"
        raise ConfigError(f"--model {args.model}: no such model under {models_dir}; {have} (or --data-dir)")
    versions = artifact.versions(models_dir, args.model)
    if args.version != "latest" and args.version not in versions:
        raise ConfigError(f"--version {args.version}: model {args.model} has versions {', '.join(versions)}")


def _print_result(args: argparse.Namespace, flow: str, text: str, data: Mapping[str, object]) -> None:
    import json

    print(json.dumps({"flow": flow, **data}, default=str) if args.json else f"{flow}: {text}")


def _check_reports_setting(args: argparse.Namespace) -> None:
    """A malformed INFERSTREAM_REPORTS_URL (or S3 endpoint) is one ConfigError line now,
    before Prefect starts, not a failed run later (the store itself is contacted by the
    flows, each run)."""
    from flows.settings import FlowSettings

    data_dir = getattr(args, "data_dir", None)
    FlowSettings(**({"data_dir": data_dir} if data_dir else {})).reports()


def cmd_flows(args: argparse.Namespace) -> int:
    if args.flows_command in ("run", "serve"):
        _check_reports_setting(args)
    if args.flows_command == "run" and args.flow == "drift":
        _check_flow_args(args)
    if args.flows_command == "serve":
        from common.settings import CommonSettings
        from flows.serve import serve

        serve(server_port=args.server_port, log_dir=CommonSettings().data_dir / "logs")
        return 0
    if args.flows_command == "automation":
        from flows.automation import ensure

        created = ensure(args.webhook_url)
        print(
            f"automation '{created.name}' ({created.id}): POSTs to {args.webhook_url} "
            "on drift, quality drop or no data"
        )
        return 0
    data_dir = str(args.data_dir) if args.data_dir else None
    if args.flow == "drift":
        from flows.drift import drift_flow
        from flows.outcome import exit_code

        state = drift_flow(
            model_name=args.model,
            model_version=args.version,
            window=args.window,
            start=args.start,
            end=args.end,
            data_dir=data_dir,
            return_state=True,
        )
        code = exit_code(state.name, state.is_completed())
        data = {"state": state.name, "message": state.message, "exit_code": code}
        _print_result(args, "drift", f"{state.name}: {state.message}", data)
        return code
    if args.flow == "bi":
        from dataclasses import asdict

        from flows.bi_load import bi_load_flow

        r = bi_load_flow(data_dir=data_dir)
        _print_result(args, "bi", r.describe(), asdict(r))
        return 0
    from flows.maintenance import maintenance_flow

    print(f"maintenance: {maintenance_flow(data_dir=data_dir)}")
    return 0
