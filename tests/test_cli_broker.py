"""``inferstream broker --kafka``: a user's local Apache Kafka cluster from the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.topics import start_admin

pytestmark = pytest.mark.slow


def _java_pids(marker: str) -> set[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout
    return {int(p) for p in out.split()}


def test_broker_kafka_prints_the_address_serves_and_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    cmd = ["broker", "--kafka", "--nodes", "1", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferstream", *cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        bootstrap = ""
        while not bootstrap and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            if "export KAFKA_BOOTSTRAP_SERVERS=" in line:
                bootstrap = line.split("=", 1)[1].strip()
        assert bootstrap, "".join(lines)
        assert any("Apache Kafka 4.4.0 (KRaft, 1 nodes)" in x for x in lines), lines

        async def topics() -> tuple[list[str], str]:
            admin = await start_admin(bootstrap)
            try:
                return await admin.list_topics(), (await admin.describe_cluster())["cluster_id"]
            finally:
                await admin.close()

        names, cluster_id = asyncio.run(topics())
        assert {"inference-events", "inference-feedback"} <= set(names)  # created before any client
        assert cluster_id != "tansu_cluster"
        marker = str(tmp_path / "kafka")
        assert _java_pids(marker), "no broker JVM running"
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    assert rc == 0
    deadline = time.monotonic() + 10
    while _java_pids(str(tmp_path / "kafka")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _java_pids(str(tmp_path / "kafka")), "a broker JVM outlived the CLI"


def test_broker_kafka_without_java_says_what_to_install(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "JAVA_HOME": str(tmp_path / "no-jdk"), "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "inferstream", "broker", "--kafka", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0, out.stderr  # one line
    assert "Java 17+" in out.stderr and "openjdk-17-jre-headless" in out.stderr
