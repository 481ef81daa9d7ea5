"""Table format benchmark: Delta Lake (delta-rs, the lake lander's format) against Apache
Iceberg (pyiceberg, SQL catalog on SQLite), on what the lander needs. Both run in one
invocation, on the local filesystem (file://), with the same rows: realistic events
(bench/landing.py's values through the lander's own parser), 4 Kafka partitions,
partitioned by model/date/hour (``common.lake.PARTITION_BY``).

1. commit: appends of ``--rows`` / 10 and ``--rows`` events with each Kafka partition's
   next offset in the same atomic commit. Delta through ``common.lakewrite.commit_batch``
   (application transactions; its event-id dedupe is off, ``key=None``, as the Iceberg
   side has none), Iceberg through ``table.append(snapshot_properties=...)`` (offsets in
   the snapshot summary, as Iceberg's Kafka Connect sink keeps them), carried forward from
   the parent so that the current snapshot holds every partition's offset. Then the time
   to read the offsets back on resume. On file:// and again on s3:// (a local SeaweedFS,
   ``common.seaweed``; the Iceberg catalog stays in a local SQLite file);
2. two writer processes, ``--writer-commits`` commits each, on their own Kafka partitions
   and on the same ones (a zombie lander after a rebalance lands the same records): rows
   lost and duplicated, conflicts retried. Iceberg as a lander must write (pyiceberg's
   retry off, ``commit.retry.num-retries=0``; offsets re-read after a conflict) and as
   ``table.append`` behaves by default (pyiceberg 0.12 retries a conflicting append by
   itself on the new snapshot, without looking at the summary);
3. metadata: ``--commits`` lander-sized commits (1,000 events), then the metadata on
   disk, open + list files and resume times, before and after maintenance: Delta as
   common/lakemaint.py does it (compact, vacuum, checkpoint + log cleanup); Iceberg with
   what pyiceberg 0.12 has: ``expire_snapshots`` (it removes snapshots from the metadata
   and deletes no file) and a compaction by hand (scan + overwrite of each partition):
   0.12 has no rewrite_data_files, rewrite_manifests or remove_orphan_files;
4. window read: one hour of one model out of 4 models x 6 hours, open + plan + read
   into Arrow (pyarrow dataset with filters for Delta, as ``common.lake.dataset`` feeds
   DuckDB; ``table.scan(row_filter)`` for Iceberg).

Usage: ``python bench/table_format.py [--rows 50000] [--commits 500] [--writer-commits 15]
[--no-s3]``.
The last line holds ``key=value`` figures (``delta_*`` beside ``iceberg_*``).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
from aiokafka import ConsumerRecord
from landing import feature_rows, make_value

from common import lake, lakemaint
from common.lakewrite import TABLE_CONFIG, PartitionBatch, app_id, commit_batch, next_offsets
from common.seaweed import SeaweedS3
from consumers.lake import LakeSink
from consumers.lake_parse import EventParser

MODELS = ("breast-cancer", "churn", "fraud", "ranker")
HOURS = 6
KAFKA_PARTITIONS = 4
T0 = datetime(2026, 11, 1, tzinfo=UTC)
TABLE = lake.EVENTS_TABLE
ICE_ID = ("lake", TABLE)
OFFSET_KEY = "inferstream.offset."  # one snapshot summary property per app id
MAX_ATTEMPTS = 30
GROUP = "bench"


# ---------------------------------------------------------------- rows


class Events:
    """Parsed events (a pool), re-stamped per batch: Kafka coordinates, model, event time."""

    def __init__(self, pool: int) -> None:
        rows = feature_rows()
        records = []
        for i in range(pool):
            key, value = make_value(rows)
            records.append(ConsumerRecord("bench", 0, i, 0, 0, key, value, None, len(key), len(value), []))
        frame = EventParser().frame(records, [])
        assert frame is not None
        self.pool = frame
        self.offsets = [0] * KAFKA_PARTITIONS
        self._partitioned = LakeSink(tempfile.gettempdir(), group=GROUP)._partitioned

    def batch(
        self, n: int, partitions: list[int], *, models: int = len(MODELS), hours: int = HOURS
    ) -> tuple[pl.DataFrame, list[PartitionBatch]]:
        """``n`` events spread evenly over ``partitions``, ``models`` models, ``hours`` hours."""
        per = n // len(partitions)
        frames, parts = [], []
        for p in partitions:
            start = self.offsets[p]
            offset = pl.int_range(start, start + per, dtype=pl.Int64)
            frames.append(
                self.pool.head(per).with_columns(
                    pl.lit(p, pl.Int32).alias("kafka_partition"),
                    offset.alias("kafka_offset"),
                    pl.lit(pl.Series([MODELS[i % models] for i in range(start, start + per)])).alias(
                        "model_name"
                    ),
                    (pl.lit(T0) + pl.duration(seconds=(offset * 7919) % (hours * 3600))).alias("event_time"),
                )
            )
            self.offsets[p] = start + per
            parts.append(PartitionBatch(app_id(GROUP, "events", p, "x"), p, start + per))
        frame = self._partitioned(frames)
        assert frame is not None
        return frame, parts


def arrow(frame: pl.DataFrame) -> pa.Table:
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


# ---------------------------------------------------------------- Delta


def delta_create(where: lake.Lake, schema: pa.Schema) -> None:
    from deltalake import write_deltalake

    write_deltalake(
        where.uri(TABLE),
        schema.empty_table(),
        partition_by=lake.PARTITION_BY,
        configuration=TABLE_CONFIG,
        storage_options=where.options(),
    )


def delta_commit(where: lake.Lake, frame: pl.DataFrame, parts: list[PartitionBatch]) -> int:
    """The lander's commit (offsets as app transactions); the attempts it took."""
    return commit_batch(where, TABLE, frame, parts, time_column="event_time", key=None).attempts


def delta_offsets(where: lake.Lake) -> dict[str, int | None]:
    ids = {app_id(GROUP, "events", p, "x"): str(p) for p in range(KAFKA_PARTITIONS)}
    return {str(k): v for k, v in next_offsets(where, TABLE, ids).items()}


# ---------------------------------------------------------------- Iceberg


def ice_catalog(root: Path, store: SeaweedS3 | None = None) -> Any:
    """The SQL catalog in ``root``; the warehouse there too, or in ``store``'s bucket."""
    from pyiceberg.catalog.sql import SqlCatalog

    if store is None:
        return SqlCatalog("bench", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")
    return SqlCatalog(
        "bench",
        uri=f"sqlite:///{root}/catalog.db",
        warehouse=f"s3://{store.bucket}/iceberg",
        **{
            "s3.endpoint": store.endpoint,
            "s3.region": "us-east-1",
            "s3.access-key-id": store.access_key,
            "s3.secret-access-key": store.secret_key,
        },
    )


def ice_create(
    root: Path, schema: pa.Schema, *, auto_retry: bool = False, store: SeaweedS3 | None = None
) -> None:
    """The table, partitioned as the Delta one. ``auto_retry``: pyiceberg's default
    commit retry; off, a conflict reaches the lander, which re-reads the offsets."""
    root.mkdir(parents=True, exist_ok=True)
    cat = ice_catalog(root, store)
    cat.create_namespace_if_not_exists("lake")
    props = {"write.metadata.delete-after-commit.enabled": "true"}  # keep 100 metadata.json files
    if not auto_retry:
        props["commit.retry.num-retries"] = "0"
    tbl = cat.create_table(ICE_ID, schema=schema, properties=props)
    with tbl.update_spec() as spec:
        for col in lake.PARTITION_BY:
            spec.add_identity(col)


def ice_offsets(tbl: Any) -> dict[str, int]:
    """The offsets in the current snapshot's summary (carried forward by every commit)."""
    snap = tbl.current_snapshot()
    if snap is None:
        return {}
    props = snap.summary.additional_properties
    return {k.removeprefix(OFFSET_KEY): int(v) for k, v in props.items() if k.startswith(OFFSET_KEY)}


def _ice_not_committed(
    done: dict[str, int], frame: pl.DataFrame, parts: list[PartitionBatch]
) -> tuple[pl.DataFrame, dict[str, int]]:
    """As ``common.lakewrite._not_committed``: rows at offsets not landed, offsets to commit."""
    rows, new = frame, {}
    for part in parts:
        landed = done.get(part.app_id)
        if landed is not None:
            rows = rows.filter(
                (pl.col("kafka_partition") != part.kafka_partition) | (pl.col("kafka_offset") >= landed)
            )
        if landed is None or landed < part.next_offset:
            new[part.app_id] = part.next_offset
    return rows, new


def ice_commit(tbl: Any, frame: pl.DataFrame, parts: list[PartitionBatch]) -> int:
    """Append with the offsets in the summary; on a conflict, re-read and retry. The
    attempts it took (a retry writes the batch's Parquet files again)."""
    from pyiceberg.exceptions import CommitFailedException

    delay = 0.05
    for attempt in range(1, MAX_ATTEMPTS + 1):
        tbl.refresh()
        done = ice_offsets(tbl)
        rows, new = _ice_not_committed(done, frame, parts)
        if not new:
            return attempt
        props = {OFFSET_KEY + a: str(v) for a, v in (done | new).items()}
        try:
            tbl.append(arrow(rows), snapshot_properties=props)
        except CommitFailedException:
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        return attempt
    raise RuntimeError(f"iceberg: {MAX_ATTEMPTS} commit attempts conflicted")


class RetryCounter(logging.Handler):
    """Counts pyiceberg's own commit retries (it logs each one)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        logging.getLogger("pyiceberg").addHandler(self)
        logging.getLogger("pyiceberg").setLevel(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.count += 1


# ---------------------------------------------------------------- helpers


def median_s(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def du(path: Path, pattern: str = "*") -> tuple[int, int]:
    files = [f for f in path.rglob(pattern) if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def ice_dir(root: Path) -> Path:
    return Path(urlparse(ice_catalog(root).load_table(ICE_ID).location()).path)


# ---------------------------------------------------------------- 1. commit latency


@dataclass
class CommitFigures:
    ms: dict[int, float]  # batch size -> median commit ms
    resume_ms: float


def commit_phase(
    tmp: Path, events: Events, sizes: list[int], counts: dict[int, int], store: SeaweedS3 | None = None
) -> dict[str, Any]:
    """Commit latency per batch size, then resume (tables in ``tmp`` or in ``store``)."""
    frame, _ = events.batch(KAFKA_PARTITIONS, list(range(KAFKA_PARTITIONS)))
    schema = arrow(frame).schema
    tmp.mkdir(parents=True, exist_ok=True)
    where, ice_root = lake.Lake(str(tmp / "delta")), tmp / "iceberg"
    if store is not None:
        where = lake.Lake(f"s3://{store.bucket}/delta", store.storage_options())
    delta_create(where, schema)
    ice_create(ice_root, schema, store=store)
    tbl = ice_catalog(ice_root, store).load_table(ICE_ID)
    batches = {n: [events.batch(n, list(range(KAFKA_PARTITIONS))) for _ in range(counts[n])] for n in sizes}
    out: dict[str, Any] = {}
    for n in sizes:
        out[f"delta_{n}"] = [_timed(lambda b=b: delta_commit(where, *b)) for b in batches[n]]
        out[f"iceberg_{n}"] = [_timed(lambda b=b: ice_commit(tbl, *b)) for b in batches[n]]
    out["delta_resume"] = median_s(lambda: delta_offsets(where))
    out["iceberg_resume"] = median_s(lambda: ice_offsets(ice_catalog(ice_root, store).load_table(ICE_ID)))
    expect = {str(p): events.offsets[p] for p in range(KAFKA_PARTITIONS)}
    got_ice = ice_offsets(ice_catalog(ice_root, store).load_table(ICE_ID))
    out["delta_ok"] = delta_offsets(where) == expect
    out["iceberg_ok"] = {k.rsplit("/", 2)[1]: v for k, v in got_ice.items()} == expect
    return out


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------- 2. concurrent writers


@dataclass
class WriterFigures:
    lost: int
    duplicated: int
    conflicts: int  # retries seen by the lander's loop (and pyiceberg's own, when on)
    offsets_ok: bool
    seconds: float  # the slower writer's, from the common start to its last commit


def writer(fmt: str, root: str, partitions: list[int], k: int, n: int, go: Any, out: Any) -> None:
    """One writer process: ``k`` commits of ``n`` rows over ``partitions``."""
    events = Events(n // len(partitions))
    counter = RetryCounter()
    if fmt == "delta":
        where = lake.Lake(root)

        def commit(frame: pl.DataFrame, parts: list[PartitionBatch]) -> int:
            return delta_commit(where, frame, parts)
    else:
        tbl = ice_catalog(Path(root)).load_table(ICE_ID)

        def commit(frame: pl.DataFrame, parts: list[PartitionBatch]) -> int:
            return ice_commit(tbl, frame, parts)

    batches = [events.batch(n, partitions) for _ in range(k)]
    out.put(None)  # ready
    go.wait()
    start = time.perf_counter()
    retries = sum(commit(*b) - 1 for b in batches)
    out.put((retries + counter.count, time.perf_counter() - start))


def writers(fmt: str, root: Path, same: bool, k: int, n: int, schema: pa.Schema) -> WriterFigures:
    root.mkdir(parents=True)
    if fmt == "delta":
        delta_create(lake.Lake(str(root)), schema)
    else:
        ice_create(root, schema, auto_retry=fmt == "iceberg-auto")
    owned = [[0, 1, 2, 3], [0, 1, 2, 3]] if same else [[0, 1], [2, 3]]
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(fmt, str(root), p, k, n, go, out)) for p in owned]
    for proc in procs:
        proc.start()
    for _ in procs:  # both have built their batches
        out.get(timeout=600)
    go.set()
    done = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    conflicts, seconds = sum(d[0] for d in done), max(d[1] for d in done)
    final = k * n // len(owned[0])  # next offset of every partition at the end
    return _verify(fmt, root, final, conflicts, seconds)


def _verify(fmt: str, root: Path, final: int, conflicts: int, seconds: float) -> WriterFigures:
    if fmt == "delta":
        where = lake.Lake(str(root))
        landed = lake.dataset(where, TABLE).to_table(columns=["kafka_partition", "kafka_offset"])  # type: ignore[union-attr]
        offsets = delta_offsets(where)
    else:
        tbl = ice_catalog(root).load_table(ICE_ID)
        landed = tbl.scan(selected_fields=("kafka_partition", "kafka_offset")).to_arrow()
        offsets = {k.rsplit("/", 2)[1]: v for k, v in ice_offsets(tbl).items()}
    df = pl.from_arrow(landed)
    assert isinstance(df, pl.DataFrame)
    distinct = df.unique().height
    ok = offsets == {str(p): final for p in range(KAFKA_PARTITIONS)}
    return WriterFigures(KAFKA_PARTITIONS * final - distinct, df.height - distinct, conflicts, ok, seconds)


# ---------------------------------------------------------------- 3. metadata growth


def metadata_phase(tmp: Path, events: Events, commits: int) -> dict[str, dict[str, float]]:
    """``commits`` commits of 1,000 events (one model, one hour: one data file each), then
    each format's state before and after its maintenance."""
    tmp.mkdir(parents=True)
    frame, _ = events.batch(KAFKA_PARTITIONS, list(range(KAFKA_PARTITIONS)), models=1, hours=1)
    schema = arrow(frame).schema
    where, ice_root = lake.Lake(str(tmp / "delta")), tmp / "iceberg"
    delta_create(where, schema)
    ice_create(ice_root, schema)
    tbl = ice_catalog(ice_root).load_table(ICE_ID)
    out: dict[str, dict[str, float]] = {}
    times: dict[str, list[float]] = {"delta": [], "iceberg": []}
    for i in range(commits):
        batch = events.batch(1_000, list(range(KAFKA_PARTITIONS)), models=1, hours=1)
        times["delta"].append(_timed(lambda b=batch: delta_commit(where, *b)))
        times["iceberg"].append(_timed(lambda b=batch: ice_commit(tbl, *b)))
        if (i + 1) % 100 == 0:
            print(f"metadata: {i + 1} commits", flush=True)
    edge = max(1, min(50, commits // 2))
    for fmt, ts in times.items():
        out[f"{fmt}_commits"] = {
            "first_ms": statistics.median(ts[:edge]) * 1000,
            "last_ms": statistics.median(ts[-edge:]) * 1000,
            "edge": edge,
        }
    out["delta_before"], out["iceberg_before"] = delta_state(where), ice_state(ice_root)
    out["delta_maint"] = {"maintenance_s": _timed(lambda: delta_maintain(where))}
    out["iceberg_maint"] = ice_maintain(ice_root)
    out["delta_after"], out["iceberg_after"] = delta_state(where), ice_state(ice_root)
    return out


def delta_state(where: lake.Lake) -> dict[str, float]:
    table_dir = Path(where.uri(TABLE))
    meta_files, meta_bytes = du(table_dir / "_delta_log")
    live = lake.table_size(where, TABLE)
    assert live is not None
    return {
        "meta_files": meta_files,
        "meta_bytes": meta_bytes,
        "live_files": live.files,
        "disk_files": du(table_dir, "*.parquet")[0] - du(table_dir / "_delta_log", "*.parquet")[0],
        "open_s": median_s(lambda: (lake.table_size(where, TABLE), lake.dataset(where, TABLE)), 3),
        "resume_s": median_s(lambda: delta_offsets(where)),
        "latest_meta_bytes": _latest(table_dir / "_delta_log", "*.checkpoint.parquet"),
    }


def ice_state(root: Path) -> dict[str, float]:
    table_dir = ice_dir(root)
    meta_files, meta_bytes = du(table_dir / "metadata")

    def open_list() -> int:
        return sum(1 for _ in ice_catalog(root).load_table(ICE_ID).scan().plan_files())

    def walk() -> int:  # offsets not carried forward: every snapshot's summary is a candidate
        tbl = ice_catalog(root).load_table(ICE_ID)
        return sum(len(s.summary.additional_properties) for s in tbl.snapshots())

    return {
        "meta_files": meta_files + 1,  # the catalog database
        "meta_bytes": meta_bytes + (root / "catalog.db").stat().st_size,
        "live_files": open_list(),
        "disk_files": du(table_dir / "data", "*.parquet")[0],
        "open_s": median_s(open_list, 3),
        "resume_s": median_s(lambda: ice_offsets(ice_catalog(root).load_table(ICE_ID))),
        "latest_meta_bytes": _latest(table_dir / "metadata", "*.metadata.json"),
        "walk_s": median_s(walk, 3),
        "snapshots": len(ice_catalog(root).load_table(ICE_ID).snapshots()),
    }


def _latest(directory: Path, pattern: str) -> int:
    """Bytes of the newest file matching ``pattern`` (0: none)."""
    files = sorted(directory.glob(pattern), key=lambda f: f.stat().st_mtime)
    return files[-1].stat().st_size if files else 0


def delta_maintain(where: lake.Lake) -> None:
    """As common/lakemaint.maintain, every hour closed, vacuum retention 0."""
    lakemaint.compact(where, TABLE, datetime.now(UTC) + timedelta(hours=HOURS + 2))
    lakemaint.vacuum(where, TABLE, retention_hours=0)
    lakemaint.checkpoint(where, TABLE)


def ice_maintain(root: Path) -> dict[str, float]:
    """What pyiceberg 0.12 offers: a compaction by hand (each partition with several files
    read and overwritten, offsets carried forward), then expire_snapshots; their seconds."""
    start = time.perf_counter()
    ice_compact(ice_catalog(root).load_table(ICE_ID))
    compact_s = time.perf_counter() - start
    ice_catalog(root).load_table(ICE_ID).maintenance.expire_snapshots().older_than(datetime.now(UTC)).commit()
    total = time.perf_counter() - start
    return {"maintenance_s": total, "compact_s": compact_s, "expire_s": total - compact_s}


def ice_compact(tbl: Any) -> None:
    from pyiceberg.expressions import And, EqualTo

    for row in tbl.inspect.partitions().to_pylist():
        if row["file_count"] < 2:
            continue
        part = row["partition"]
        expr = And(
            EqualTo("model", part["model"]),
            EqualTo("date", part["date"].isoformat()),
            EqualTo("hour", part["hour"]),
        )
        props = {OFFSET_KEY + a: str(v) for a, v in ice_offsets(tbl).items()}
        tbl.overwrite(tbl.scan(row_filter=expr).to_arrow(), overwrite_filter=expr, snapshot_properties=props)


# ---------------------------------------------------------------- 4. window read


def window_phase(tmp: Path) -> dict[str, float]:
    """One hour of one model (of 4 x 6), median of 3: open + plan + read into Arrow."""
    from pyiceberg.expressions import And, EqualTo

    model, day, hour = MODELS[1], T0.date(), 2
    where, ice_root = lake.Lake(str(tmp / "delta")), tmp / "iceberg"

    def delta_read() -> int:
        flt = (pads.field("model") == model) & (pads.field("date") == day) & (pads.field("hour") == hour)
        return lake.dataset(where, TABLE).to_table(filter=flt).num_rows  # type: ignore[union-attr]

    def ice_read() -> int:
        expr = And(EqualTo("model", model), EqualTo("date", day.isoformat()), EqualTo("hour", hour))
        return int(ice_catalog(ice_root).load_table(ICE_ID).scan(row_filter=expr).to_arrow().num_rows)

    out = {"delta_rows": delta_read(), "iceberg_rows": ice_read()}
    out["delta_s"], out["iceberg_s"] = median_s(delta_read, 3), median_s(ice_read, 3)
    out["total_rows"] = lake.table_size(where, TABLE).rows  # type: ignore[union-attr]
    return out


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000, help="the large batch (the small one is a tenth)")
    ap.add_argument("--commits", type=int, default=500, help="small commits of the metadata phase")
    ap.add_argument("--writer-commits", type=int, default=15, help="commits of each concurrent writer")
    ap.add_argument("--no-s3", action="store_true", help="skip the commit phase on s3:// (SeaweedFS)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    sizes = [args.rows // 10, args.rows]
    counts = {sizes[0]: 8, sizes[1]: 3}
    events = Events(args.rows // KAFKA_PARTITIONS)
    with tempfile.TemporaryDirectory(prefix="bench-format-") as work:
        tmp = Path(work)
        commits = {"file": commit_phase(tmp / "commit", events, sizes, counts)}
        window = window_phase(tmp / "commit")
        if not args.no_s3:
            commits["s3"] = s3_commit_phase(tmp / "s3", events, sizes, counts)
        print("commit phases done", flush=True)
        schema = arrow(events.batch(KAFKA_PARTITIONS, [0, 1, 2, 3])[0]).schema
        conc = concurrent_phase(tmp, args.writer_commits, schema)
        meta = metadata_phase(tmp / "meta", events, args.commits)
    report(args, sizes, commits, conc, meta, window)


def s3_commit_phase(tmp: Path, events: Events, sizes: list[int], counts: dict[int, int]) -> dict[str, Any]:
    store = SeaweedS3(tmp / "seaweedfs")
    try:
        store.start()
        return commit_phase(tmp, events, sizes, counts, store)
    finally:
        store.stop()


def concurrent_phase(tmp: Path, k: int, schema: pa.Schema) -> dict[tuple[str, bool], WriterFigures]:
    conc = {}
    for fmt, same in (("delta", False), ("delta", True), ("iceberg", False), ("iceberg", True)):
        conc[(fmt, same)] = writers(fmt, tmp / f"writers-{fmt}-{same}", same, k, 4_000, schema)
    conc[("iceberg-auto", True)] = writers("iceberg-auto", tmp / "writers-auto", True, k, 4_000, schema)
    print("concurrent writers done", flush=True)
    return conc


# ---------------------------------------------------------------- report


def report(
    args: argparse.Namespace,
    sizes: list[int],
    commits: dict[str, dict[str, Any]],
    conc: dict[tuple[str, bool], WriterFigures],
    meta: dict[str, dict[str, float]],
    window: dict[str, float],
) -> None:
    rows: list[tuple[str, str, str]] = []
    figures: dict[str, str] = {}
    for storage, commit in commits.items():
        _commit_rows(storage, sizes, commit, rows, figures)
    _writer_rows(args, conc, rows, figures)
    _meta_rows(args, meta, rows, figures)
    _window_rows(window, rows, figures)
    print()
    print("| measure (file:// unless marked) | Delta (deltalake) | Iceberg (pyiceberg, SQLite catalog) |")
    print("|---|---:|---:|")
    for name, d, i in rows:
        print(f"| {name} | {d} | {i} |")
    print()
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


def _commit_rows(
    storage: str, sizes: list[int], c: dict[str, Any], rows: list[Any], figures: dict[str, str]
) -> None:
    """Rows and figures of one commit phase (``storage``: file, s3; s3 figures are prefixed)."""
    pre, where = ("", "") if storage == "file" else (f"{storage}_", f"{storage}:// ")
    for n in sizes:
        d, i = (statistics.median(c[f"{f}_{n}"]) * 1000 for f in ("delta", "iceberg"))
        label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
        what = f"{where}append {n:,} rows + 4 offsets, median of {len(c[f'delta_{n}'])} (ms)"
        rows.append((what, f"{d:.0f}", f"{i:.0f}"))
        figures[f"{pre}delta_commit_ms_{label}"] = f"{d:.0f}"
        figures[f"{pre}iceberg_commit_ms_{label}"] = f"{i:.0f}"
    d, i = c["delta_resume"] * 1000, c["iceberg_resume"] * 1000
    rows.append((f"{where}resume: read the 4 offsets back, median of 5 (ms)", f"{d:.1f}", f"{i:.1f}"))
    rows.append((f"{where}offsets right after the commits", _yes(c["delta_ok"]), _yes(c["iceberg_ok"])))
    figures[f"{pre}delta_resume_ms"], figures[f"{pre}iceberg_resume_ms"] = f"{d:.1f}", f"{i:.1f}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _writer_rows(
    args: argparse.Namespace,
    conc: dict[tuple[str, bool], WriterFigures],
    rows: list[Any],
    figures: dict[str, str],
) -> None:
    k = args.writer_commits
    for same, what in ((False, "own partitions"), (True, "the same partitions (zombie)")):
        d, i = conc[("delta", same)], conc[("iceberg", same)]
        rows.append((f"2 writers x {k} commits, {what}: lost / duplicated rows", _ld(d), _ld(i)))
        rows.append(("... conflicts retried / offsets right / seconds", _cr(d), _cr(i)))
        key = "same" if same else "own"
        for fmt, w in (("delta", d), ("iceberg", i)):
            figures[f"{fmt}_{key}_lost"], figures[f"{fmt}_{key}_dup"] = str(w.lost), str(w.duplicated)
            figures[f"{fmt}_{key}_conflicts"] = str(w.conflicts)
    a = conc[("iceberg-auto", True)]
    rows.append(("... same partitions, pyiceberg's own retry on: lost / duplicated rows", "n/a", _ld(a)))
    rows.append(("... conflicts retried / offsets right / seconds", "n/a", _cr(a)))
    figures["iceberg_autoretry_same_dup"] = str(a.duplicated)


def _ld(w: WriterFigures) -> str:
    return f"{w.lost:,} / {w.duplicated:,}"


def _cr(w: WriterFigures) -> str:
    return f"{w.conflicts} / {_yes(w.offsets_ok)} / {w.seconds:.1f}"


META_ROWS = [
    ("meta_files", "metadata files on disk", "{:,.0f}"),
    ("meta_bytes", "metadata bytes on disk", "{:,.0f}"),
    ("live_files", "live data files", "{:,.0f}"),
    ("disk_files", "data files on disk", "{:,.0f}"),
    ("open_s", "open + list files (s)", "{:.3f}"),
    ("resume_s", "resume: read offsets (s)", "{:.3f}"),
    ("latest_meta_bytes", "newest checkpoint / metadata.json (bytes)", "{:,.0f}"),
]


def _meta_rows(
    args: argparse.Namespace, m: dict[str, dict[str, float]], rows: list[Any], figures: dict[str, str]
) -> None:
    n = args.commits
    for when in ("before", "after"):
        label = f"after {n} commits" if when == "before" else "after maintenance"
        for key, name, fmt in META_ROWS:
            d, i = m[f"delta_{when}"][key], m[f"iceberg_{when}"][key]
            rows.append((f"{label}: {name}", fmt.format(d), fmt.format(i)))
            figures[f"delta_{key}_{when}"], figures[f"iceberg_{key}_{when}"] = fmt.format(d), fmt.format(i)
        w = m[f"iceberg_{when}"]
        rows.append((f"{label}: resume walking every snapshot's summary (s)", "n/a", f"{w['walk_s']:.3f}"))
        rows.append((f"{label}: snapshots in the metadata", "", f"{w['snapshots']:,.0f}"))
    d, i = m["delta_commits"], m["iceberg_commits"]
    for key, which in (("first_ms", "first"), ("last_ms", "last")):
        rows.append(
            (
                f"commit 1,000 rows + 4 offsets, median of the {which} {d['edge']:.0f} of {n} (ms)",
                f"{d[key]:.0f}",
                f"{i[key]:.0f}",
            )
        )
        figures[f"delta_commit_{which}_ms"], figures[f"iceberg_commit_{which}_ms"] = (
            f"{d[key]:.0f}",
            f"{i[key]:.0f}",
        )
    d, i = m["delta_maint"]["maintenance_s"], m["iceberg_maint"]["maintenance_s"]
    ice = m["iceberg_maint"]
    rows.append(
        (
            "maintenance (s); Iceberg: compaction by hand + expire_snapshots",
            f"{d:.2f}",
            f"{i:.2f} ({ice['compact_s']:.2f} + {ice['expire_s']:.2f})",
        )
    )
    figures["delta_maintenance_s"], figures["iceberg_maintenance_s"] = f"{d:.2f}", f"{i:.2f}"
    for k in list(figures):
        figures[k] = figures[k].replace(",", "")


def _window_rows(w: dict[str, float], rows: list[Any], figures: dict[str, str]) -> None:
    d, i = w["delta_rows"] / w["delta_s"], w["iceberg_rows"] / w["iceberg_s"]
    rows.append(
        (
            f"window read, 1 model x 1 hour of {w['total_rows']:,} rows: rows / seconds",
            f"{w['delta_rows']:,} / {w['delta_s']:.3f}",
            f"{w['iceberg_rows']:,} / {w['iceberg_s']:.3f}",
        )
    )
    rows.append(("... rows/s", f"{d:,.0f}", f"{i:,.0f}"))
    figures["delta_window_rows_per_s"], figures["iceberg_window_rows_per_s"] = f"{d:.0f}", f"{i:.0f}"


if __name__ == "__main__":
    main()
