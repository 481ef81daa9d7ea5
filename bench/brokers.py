"""The brokers a benchmark runs against, chosen with ``--broker tansu|kafka|both``.

- ``tansu``: the embedded Tansu broker (in memory, one process, no replication): what
  ``make demo`` runs.
- ``kafka``: a real Apache Kafka in KRaft mode, one combined broker/controller node (the
  speed configuration of ``common.kafka_cluster``: replication factor 1, log segments on
  disk). Needs Java 17+; the jars come from the Maven cache.

``KAFKA_BOOTSTRAP_SERVERS``, when set, replaces the choice with that one broker
(``external``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from common.broker import EmbeddedBroker
from common.kafka_cluster import KAFKA_VERSION, KafkaCluster

LABELS = {
    "tansu": "Tansu (embedded, in memory)",
    "kafka": f"Apache Kafka {KAFKA_VERSION} (1 KRaft node)",
    "external": "KAFKA_BOOTSTRAP_SERVERS",
}


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=["tansu", "kafka", "both"],
        default="both",
        help="the broker(s) to measure, side by side (default both; KAFKA_BOOTSTRAP_SERVERS overrides)",
    )


def selected(choice: str) -> list[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return ["external"]
    return ["tansu", "kafka"] if choice == "both" else [choice]


@contextlib.contextmanager
def running(name: str, work_dir: Path) -> Iterator[str]:
    """The bootstrap address of a started broker ``name``; stopped on exit."""
    if name == "external":
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    elif name == "tansu":
        with EmbeddedBroker(log_path=work_dir / "tansu.log") as broker:
            yield broker.bootstrap_servers
    else:
        with KafkaCluster(1, work_dir=work_dir / "kafka") as cluster:
            yield cluster.bootstrap_servers
