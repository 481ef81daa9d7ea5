"""A local Apache Kafka cluster in KRaft mode, on loopback, for tests and for users.

``KafkaCluster(nodes=3)`` runs N JVM processes, each a combined broker and controller
(a controller quorum of N), on free loopback ports. The broker's jars
(``org.apache.kafka:kafka_2.13``, pinned as :data:`KAFKA_VERSION`) are fetched from
Maven Central by ``mvn dependency:copy-dependencies`` into a cache directory on first
use (``common.kafka_install.kafka_libs``); after that, starting needs no network.

Each node's log directory is formatted with Kafka's own storage tool before its first
start; logs go to ``<work_dir>/node-<id>/server.log``. ``stop()`` sends SIGTERM to every
node, waits, then SIGKILLs; it is safe to call twice and is what ``__exit__`` calls, so
nothing is left running when a test fails. With ``die_with_parent`` (the default) the
kernel also kills the nodes if the launching process dies without cleaning up.

With ``class_data_sharing`` the nodes and the storage tool map a class-data-sharing
archive (the JDK's dynamic CDS) of the classes a broker loads: a node then starts in about
half the CPU. The archive is made once, by a one-node broker started with
``-XX:ArchiveClassesAtExit`` and stopped with SIGTERM, and kept beside the jars under a
name keyed to the JVM and the jars (:func:`class_data_archive`).

Fault tests use :meth:`KafkaCluster.kill_node`, :meth:`stop_node` and
:meth:`start_node`; :meth:`wait_brokers` waits for the cluster to see a given set of
live brokers.

Topics of a cluster with three or more nodes default to replication factor 3 and
``min.insync.replicas=2``, as in ``deployments/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType

from common.broker import free_port, wait_for_port
from common.errors import ConfigError, DependencyUnavailable
from common.kafka_install import KAFKA_VERSION, exclusive, java_executable, kafka_libs

__all__ = [
    "KAFKA_VERSION",
    "KafkaCluster",
    "KafkaNode",
    "class_data_archive",
    "java_executable",
    "kafka_libs",
]

log = logging.getLogger(__name__)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """PR_SET_PDEATHSIG: the kernel SIGKILLs the node if its launcher dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)


@dataclass
class KafkaNode:
    node_id: int
    broker_port: int
    controller_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class KafkaCluster:
    """N combined broker+controller nodes on loopback; a context manager."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        work_dir: Path,
        libs: Path | None = None,
        java: str | None = None,
        java_home: Path | None = None,
        heap_mb: int = 512,
        config: dict[str, str] | None = None,
        die_with_parent: bool = True,
        base_port: int | None = None,
        jvm_options: Sequence[str] = (),
        class_data_sharing: bool | Path = False,
    ) -> None:
        """``base_port``: brokers listen on base_port, base_port+1, ...; free ports if None.
        ``jvm_options``: extra JVM flags for the nodes and the storage tool (a test suite
        passes ``-XX:TieredStopAtLevel=1``: a node starts in about half the time, at a
        throughput a benchmark would not want).
        ``class_data_sharing``: map a class-data-sharing archive, kept beside the jars
        (True) or in the given directory, made on first use (:func:`class_data_archive`)."""
        if nodes < 1:
            raise ConfigError(f"a Kafka cluster needs at least one node, not {nodes}")
        self.work_dir = work_dir
        self.libs = libs
        self.java = java
        self.java_home = java_home
        self.heap_mb = heap_mb
        self.extra_config = dict(config or {})
        self.die_with_parent = die_with_parent
        self.jvm_options = list(jvm_options)
        self.class_data_sharing = class_data_sharing
        self.class_data_file: Path | None = None
        self.cluster_id = ""
        self.nodes = [
            KafkaNode(
                i,
                base_port + i - 1 if base_port else free_port(),
                free_port(),
                work_dir / f"node-{i}",
            )
            for i in range(1, nodes + 1)
        ]
        self._java_exe = ""
        self._formatted = False

    # -- addresses -------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def replication_factor(self) -> int:
        return min(3, len(self.nodes))

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    # -- configuration ---------------------------------------------------------------
    def _properties(self, node: KafkaNode) -> dict[str, str]:
        rf = self.replication_factor
        min_isr = 2 if rf >= 3 else 1
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.voters": voters,
            "log.dirs": str(node.data_dir),
            "num.partitions": "4",
            "default.replication.factor": str(rf),
            "min.insync.replicas": str(min_isr),
            "offsets.topic.replication.factor": str(rf),
            # 50 partitions x RF 3 makes the first group join slow on a small machine
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "group.initial.rebalance.delay.ms": "0",
            # a dead node is fenced (and leaves every ISR) ~3 s after its last heartbeat
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "replica.lag.time.max.ms": "10000",
            "unclean.leader.election.enable": "false",
            "auto.create.topics.enable": "true",
            "log.retention.check.interval.ms": "60000",
        }
        props.update(self.extra_config)
        return props

    def _write_config(self, node: KafkaNode) -> Path:
        node.directory.mkdir(parents=True, exist_ok=True)
        path = node.directory / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self._properties(node).items()))
        return path

    def _java_cmd(self, main: str, *args: str, heap_mb: int) -> list[str]:
        assert self.libs is not None
        log4j = resources.files("common.kafka").joinpath("log4j2.properties")
        return [
            self._java_exe,
            "-Xms64m",
            f"-Xmx{heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            *self.jvm_options,
            *([f"-XX:SharedArchiveFile={self.class_data_file}"] if self.class_data_file else []),
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def format(self) -> None:
        """Format every node's log directory with Kafka's storage tool (once)."""
        if self._formatted:
            return
        self._java_exe = java_executable(self.java, self.java_home)
        if self.libs is None:
            self.libs = kafka_libs()
        if self.class_data_sharing and self.class_data_file is None:
            where = self.class_data_sharing if isinstance(self.class_data_sharing, Path) else None
            self.class_data_file = class_data_archive(
                self._java_exe, self.libs, where, jvm_options=self.jvm_options
            )
        self.cluster_id = self.cluster_id or _cluster_id()
        procs = []
        for node in self.nodes:
            config = self._write_config(node)
            cmd = self._java_cmd(
                "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(config),
                "--ignore-formatted", heap_mb=256,
            )  # fmt: skip
            procs.append((node, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        for node, proc in procs:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise DependencyUnavailable(
                    f"formatting Kafka node {node.node_id} failed:\n{out.decode(errors='replace')[-2000:]}"
                )
        self._formatted = True

    # -- lifecycle -------------------------------------------------------------------
    def start(self, timeout_s: float = 180.0) -> KafkaCluster:
        try:
            self.format()
            for node in self.nodes:
                self._spawn(node)
            self.wait_brokers({n.node_id for n in self.nodes}, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, node: KafkaNode) -> None:
        if node.alive():
            return
        cmd = self._java_cmd("kafka.Kafka", str(node.directory / "server.properties"), heap_mb=self.heap_mb)
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the launcher, which stops the nodes
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )

    def start_node(self, *node_ids: int, timeout_s: float = 180.0) -> None:
        """Start stopped nodes again (all at once: two nodes of three are needed for a
        controller quorum) and wait until the cluster sees every live node."""
        for node_id in node_ids:
            self._spawn(self.node(node_id))
        live = {n.node_id for n in self.nodes if n.alive()}
        self.wait_brokers(live, timeout_s)

    def stop_node(self, node_id: int, timeout_s: float = 30.0) -> None:
        """SIGTERM (a controlled shutdown), wait, then SIGKILL."""
        _terminate(self.node(node_id), timeout_s)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL, for fault tests."""
        node = self.node(node_id)
        if node.proc is not None and node.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                node.proc.kill()
            node.proc.wait()

    def pause_node(self, node_id: int) -> None:
        """SIGSTOP: a hung broker that still holds its sockets open."""
        node = self.node(node_id)
        if node.alive():
            assert node.proc is not None
            node.proc.send_signal(signal.SIGSTOP)

    def resume_node(self, node_id: int) -> None:
        node = self.node(node_id)
        if node.alive():
            assert node.proc is not None
            node.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL every node: for a cluster whose data is thrown away (a test's). A
        controlled shutdown of all nodes at once waits out the lost controller quorum
        (``stop``'s whole timeout) on the last node. Safe to call twice."""
        for node in self.nodes:
            self.kill_node(node.node_id)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop every node: SIGTERM to all at once, wait, SIGKILL. Safe to call twice."""
        for node in self.nodes:
            if node.alive():
                assert node.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    node.proc.send_signal(signal.SIGCONT)
                    node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill_node(node.node_id)

    def wait_brokers(self, node_ids: set[int], timeout_s: float = 60.0) -> None:
        """Wait until exactly ``node_ids`` are the cluster's live (unfenced) brokers."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if node.node_id in node_ids:
                self._check_alive(node)
                wait_for_port("127.0.0.1", node.broker_port, max(1.0, deadline - time.monotonic()))
        last: set[int] = set()
        while True:
            for node in self.nodes:
                if node.node_id in node_ids:
                    self._check_alive(node)
            with contextlib.suppress(Exception):  # not ready yet: any client error means "wait"
                last = asyncio.run(self.live_brokers(node_ids))
                if last == node_ids:
                    return
            if time.monotonic() > deadline:
                raise DependencyUnavailable(
                    f"Kafka cluster did not report brokers {sorted(node_ids)} within {timeout_s:.0f}s "
                    f"(saw {sorted(last)}); logs under {self.work_dir}"
                )
            time.sleep(0.25)

    async def live_brokers(self, via: set[int] | None = None) -> set[int]:
        """The broker ids in the cluster's metadata, asked of the nodes in ``via``."""
        from aiokafka.admin import AIOKafkaAdminClient

        ids = via or {n.node_id for n in self.nodes}
        bootstrap = ",".join(self.node(i).address for i in sorted(ids))
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await asyncio.wait_for(admin.start(), 10)
        try:
            described = await asyncio.wait_for(admin.describe_cluster(), 10)
            return {int(b["node_id"]) for b in described["brokers"]}
        finally:
            await admin.close()

    def _check_alive(self, node: KafkaNode) -> None:
        if node.proc is not None and node.proc.poll() is not None:
            tail = "\n".join(node.log_path.read_text(errors="replace").splitlines()[-20:])
            raise DependencyUnavailable(
                f"Kafka node {node.node_id} exited with {node.proc.returncode}; {node.log_path}:\n{tail}"
            )

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _terminate(node: KafkaNode, timeout_s: float) -> None:
    proc = node.proc
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_ARCHIVES_NOT_MADE: set[Path] = set()  # tried in this process and failed: not again


def class_data_archive(
    java_exe: str, libs: Path, directory: Path | None = None, *, jvm_options: Sequence[str] = ()
) -> Path | None:
    """The path of a class-data-sharing archive for ``java_exe`` running the jars in
    ``libs``, made now if there is none yet; None (and a warning) if it cannot be made, and
    the nodes start without one.

    The name is a digest of the JVM (its resolved path, size and modification time) and
    of the jars (names and sizes): another JDK or another Kafka gets its own archive, and
    the JVM itself still checks the archive's header and runs without it on a mismatch.
    It is made by a one-node broker started with ``-XX:ArchiveClassesAtExit`` into a
    temporary file and stopped with SIGTERM; the file is renamed into place only if the
    broker exited by that signal or cleanly, so a crashed or killed training run leaves
    nothing behind. Concurrent callers (parallel test sessions) take a file lock: one
    makes the archive, the others wait for it."""
    directory = directory or libs.parent / "cds"
    exe = Path(java_exe if os.sep in java_exe else (shutil.which(java_exe) or java_exe)).resolve()
    key = hashlib.sha256()
    with contextlib.suppress(OSError):
        st = exe.stat()
        key.update(f"{exe}|{st.st_size}|{st.st_mtime_ns}".encode())
    for jar in sorted(libs.glob("*.jar")):
        key.update(f"|{jar.name}:{jar.stat().st_size}".encode())
    archive = directory / f"kafka-{key.hexdigest()[:16]}.jsa"
    if archive.exists():
        return archive
    if archive in _ARCHIVES_NOT_MADE:
        return None
    with exclusive(directory):
        if archive.exists():
            return archive
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            partial = Path(tmp) / "archive.jsa"
            options = [*jvm_options, f"-XX:ArchiveClassesAtExit={partial}"]
            training = KafkaCluster(1, work_dir=Path(tmp), libs=libs, java=java_exe, jvm_options=options)
            try:
                training.start(timeout_s=120)
            except Exception as exc:
                training.kill()
                log.warning("no class-data-sharing archive for Kafka (its training broker failed: %s)", exc)
                _ARCHIVES_NOT_MADE.add(archive)
                return None
            training.stop(timeout_s=30)
            code = training.nodes[0].proc.returncode if training.nodes[0].proc else None
            if code not in (0, 128 + signal.SIGTERM, -signal.SIGTERM) or not partial.exists():
                log.warning(
                    "no class-data-sharing archive for Kafka (its training broker exited with %s, "
                    "archive written: %s)", code, partial.exists(),
                )  # fmt: skip
                _ARCHIVES_NOT_MADE.add(archive)
                return None
            os.replace(partial, archive)
    log.info("made a class-data-sharing archive for Kafka: %s", archive)
    return archive


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding; never one
    starting with "-", which the storage tool's argument parser reads as an option."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
