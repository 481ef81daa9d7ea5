"""The class-data-sharing archive the suite's Kafka nodes map (``common.kafka_cluster``):
made once by a training broker, kept under a name keyed to the JVM and the jars, mapped
by the nodes and the storage tool, and never left half-made."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from common.kafka_cluster import KafkaCluster, class_data_archive, java_executable, kafka_libs

from .conftest import KAFKA_JVM_OPTIONS

pytestmark = pytest.mark.slow


def test_the_archive_is_made_once_and_every_jvm_of_a_cluster_maps_it(tmp_path: Path) -> None:
    java, libs = java_executable(), kafka_libs()
    # the suite's own archive, beside the jars: made here on a machine that has none yet
    # (and then used by the suite's clusters), found otherwise
    archive = class_data_archive(java, libs, jvm_options=KAFKA_JVM_OPTIONS)
    assert archive is not None and archive.parent == libs.parent / "cds"
    assert archive.stat().st_size > 1_000_000  # the broker's classes, not an empty file
    made = archive.stat().st_mtime_ns
    assert class_data_archive(java, libs, jvm_options=KAFKA_JVM_OPTIONS) == archive
    assert archive.stat().st_mtime_ns == made  # found, not made again
    assert not [p for p in archive.parent.iterdir() if p.is_dir()]  # no training leftovers

    # -Xshare:on makes the JVM refuse to start if it cannot map the archive
    mapped = subprocess.run(
        [java, "-Xshare:on", f"-XX:SharedArchiveFile={archive}", "-cp", f"{libs}/*",
         "kafka.tools.StorageTool", "random-uuid"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert mapped.returncode == 0, mapped.stdout + mapped.stderr

    cluster = KafkaCluster(
        1, work_dir=tmp_path / "kafka", jvm_options=KAFKA_JVM_OPTIONS, class_data_sharing=True
    )
    cluster.format()  # the storage tool runs with the archive too
    assert cluster.class_data_file == archive
    assert f"-XX:SharedArchiveFile={archive}" in cluster._java_cmd("kafka.Kafka", heap_mb=256)


def test_a_training_broker_that_fails_leaves_no_archive_and_the_cluster_starts_without(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    java, libs = java_executable(), kafka_libs()
    where = tmp_path / "cds"
    # a flag the JVM refuses: the training broker cannot start
    assert class_data_archive(java, libs, where, jvm_options=["-XX:+NoSuchOptionHere"]) is None
    assert "no class-data-sharing archive for Kafka" in caplog.text
    assert [p.name for p in where.iterdir()] == [".lock"]
    # and is not tried again in this process
    assert class_data_archive(java, libs, where, jvm_options=KAFKA_JVM_OPTIONS) is None
    cluster = KafkaCluster(
        1, work_dir=tmp_path / "kafka", jvm_options=KAFKA_JVM_OPTIONS, class_data_sharing=where
    )
    cluster.format()
    assert cluster.class_data_file is None
    assert not any("SharedArchiveFile" in arg for arg in cluster._java_cmd("kafka.Kafka", heap_mb=256))
