"""Real services for the suite.

- Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else a real Apache Kafka cluster in KRaft
  mode (3 combined broker/controller nodes on free loopback ports, topics with
  replication factor 3 and ``min.insync.replicas=2``) for the session; or, with
  ``INFERSTREAM_TEST_BROKER=tansu``, the embedded Tansu broker. Each test gets its own
  topic (``topic`` fixture).
- An S3-compatible store: SeaweedFS on free loopback ports for the session (``seaweed``).
- A trained model artifact on scikit-learn's bundled breast-cancer data, with a derived
  category and boolean feature so that every feature type is exercised.
- Under pytest-xdist (``make test`` runs 2 workers, each with its own services), the
  fault tests whose consumer-group sessions or latency bounds a CPU-starved moment can
  break run one after another on one worker (``pytest_xdist_make_scheduler``).
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from sklearn.datasets import load_breast_cancer

from common.artifact import FeatureSpec
from common.broker import EmbeddedBroker
from common.kafka_cluster import KafkaCluster
from common.lake import Lake
from common.seaweed import SeaweedS3
from common.topics import ensure_topics
from inferstream.train import train_classifier

from . import support

MODEL_NAME = "breast-cancer"
# Fault tests that kill and restart brokers, consumers or the API under load and assert
# group handoffs or latency: two of them at once on a 2-core machine can starve a
# process past its 6 s group session (seen once: two drift monitors' sessions expired
# together). Under xdist they are one scope, run in order by one worker, while the
# other worker takes the rest test by test.
SERIAL_FAULT_MODULES = frozenset(
    {
        "tests/api/test_api_faults.py",
        "tests/test_kafka_cluster_faults.py",
        "tests/consumers/test_lander_faults.py",
        "tests/consumers/test_drift_monitor_process.py",
        "tests/consumers/test_fraud_exactly_once.py",
    }
)


# The modules whose tests run flows in the Prefect test harness: one scope too, so that
# one worker starts the harness's API server (about 12 s of CPU on a quiet machine, and
# its first test took 50 to 75 s on a loaded one) and imports the flows' libraries once.
PREFECT_HARNESS_MODULES = frozenset(
    str(path.relative_to(Path(__file__).parent.parent))
    for path in (Path(__file__).parent / "flows").glob("test_*.py")
    if "prefect_harness" in path.read_text()
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's load-scope scheduling with every test its own scope except the serial
    fault modules, which share one, and the Prefect harness's modules, which share
    another (``--dist loadgroup`` would say the same with markers, but pytest 9.2
    ignores the node ids xdist 3.8 rewrites for it)."""
    from xdist.scheduler import LoadScopeScheduling

    class FaultsApart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module in SERIAL_FAULT_MODULES:
                return "serial-fault-tests"
            return "prefect-harness-tests" if module in PREFECT_HARNESS_MODULES else nodeid

    return FaultsApart(config, log)


# the JIT's first tier only: a node starts in about half the time (a 3-node cluster in
# ~13 s instead of ~29 s on a busy 2-core machine), fast enough for the tests' load.
# The suite's clusters also map a class-data-sharing archive (made by the first one, kept
# beside the jars): a 3-node cluster's format and start then cost about 8.5 instead of
# 12 s of CPU on a quiet machine
KAFKA_JVM_OPTIONS = ("-XX:TieredStopAtLevel=1",)
TEST_BROKER = os.environ.get("INFERSTREAM_TEST_BROKER", "kafka")


@pytest.fixture(autouse=True)
def seed(request: pytest.FixtureRequest) -> int:
    """Each test's random seed (``INFERSTREAM_TEST_SEED`` replays one), printed: the
    events of ``support.make_event`` are drawn with it, and a test that draws anything
    else at random (kill times, pauses) makes its ``random.Random(seed)``."""
    value = support.test_seed(request.node.nodeid)
    support.EVENT_RNG.seed(value)
    return value


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The suite's PostgreSQL server (``support.PG_DSN``; ``INFERSTREAM_TEST_POSTGRES_DSN``
    overrides it)."""
    return support.PG_DSN


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    if TEST_BROKER == "tansu":
        log = tmp_path_factory.mktemp("broker") / "tansu.log"
        with EmbeddedBroker(log_path=log) as broker:
            support.TANSU_ADDRESSES.add(broker.bootstrap_servers)
            yield broker.bootstrap_servers
        return
    if TEST_BROKER != "kafka":
        raise pytest.UsageError(f"INFERSTREAM_TEST_BROKER must be kafka or tansu, not {TEST_BROKER!r}")
    cluster = KafkaCluster(
        3, work_dir=tmp_path_factory.mktemp("kafka"), jvm_options=KAFKA_JVM_OPTIONS, class_data_sharing=True
    ).start()
    try:
        yield cluster.bootstrap_servers
    finally:
        cluster.kill()  # thrown away: a controlled shutdown of all three waits ~20 s


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3-compatible store (SeaweedFS ``weed mini``) for the session; stopped at the
    end, also when a test failed. Its bucket is ``lake``; a test keeps to a prefix of its own."""
    store = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield store.start()
    finally:
        store.stop()


@pytest.fixture
def kafka_cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    """A 3-node cluster of the test's own, for fault tests that stop, kill or pause
    nodes (the session's cluster stays untouched). Stopped when the test ends, also on
    failure (SIGKILL: its data is thrown away, and a controlled shutdown of all three
    nodes waits ~20 s for the controller quorum it loses on the way)."""
    cluster = KafkaCluster(
        3, work_dir=tmp_path / "kafka", jvm_options=KAFKA_JVM_OPTIONS, class_data_sharing=True
    ).start()
    try:
        yield cluster
    finally:
        cluster.kill()


def unique_topic(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> str:
    """A fresh 4-partition topic named after the test."""
    name = unique_topic(request)
    asyncio.run(ensure_topics(kafka_bootstrap, {name: 4}))
    return name


def breast_cancer_frame() -> tuple[pl.DataFrame, list[FeatureSpec]]:
    raw = load_breast_cancer(as_frame=True).frame
    raw.columns = [re.sub(r"\W+", "_", c.strip()) for c in raw.columns]
    df = pl.from_pandas(raw).with_columns(
        pl.when(pl.col("mean_radius") < 12)
        .then(pl.lit("small"))
        .when(pl.col("mean_radius") < 16)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("large"))
        .alias("size_band"),
        (pl.col("mean_texture") > pl.col("mean_texture").median()).alias("high_texture"),
    )
    numeric = [c for c in raw.columns if c != "target"]
    features = [FeatureSpec(c, "number") for c in numeric]
    features += [FeatureSpec("size_band", "category"), FeatureSpec("high_texture", "boolean")]
    return df, features


@dataclass(frozen=True)
class TrainedModel:
    data_dir: Path
    name: str
    version: str
    rows: list[dict[str, object]]  # valid feature payloads


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    data_dir = tmp_path_factory.mktemp("data")
    df, features = breast_cancer_frame()
    path = train_classifier(
        df, features=features, target="target", name=MODEL_NAME, models_dir=data_dir / "models"
    )
    rows = df.select([f.name for f in features]).to_dicts()
    return TrainedModel(data_dir, MODEL_NAME, path.name, rows)


@dataclass(frozen=True)
class LakeAt:
    """Where a test's lake is: the consumer's environment for it, and the location to read."""

    env: dict[str, str]
    where: Lake | Path


@pytest.fixture(params=["file", "s3"])
def lake_at(request: pytest.FixtureRequest, tmp_path: Path, topic: str) -> LakeAt:
    """The test's lake on ``file://`` (under tmp_path) and on ``s3://`` (SeaweedFS)."""
    if request.param == "file":
        return LakeAt({}, tmp_path / "lake")
    store: SeaweedS3 = request.getfixturevalue("seaweed")
    url = f"s3://{store.bucket}/{topic}"
    env = {
        "INFERSTREAM_LAKE_URL": url,
        "INFERSTREAM_S3_ENDPOINT": store.endpoint,
        "INFERSTREAM_S3_ACCESS_KEY_ID": store.access_key,
        "INFERSTREAM_S3_SECRET_ACCESS_KEY": store.secret_key,
    }
    return LakeAt(env, Lake(url, store.storage_options()))
