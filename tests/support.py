"""Helpers shared by the tests that run real processes: a live event stream (with
optional poison), reading the dead-letter topic back, the environment of a consumer
process, waiting for what a process logs (or any condition, always with a deadline), the
seed of a test's randomness, and a TCP proxy that cuts a dependency off."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import GroupCoordinatorNotAvailableError

from common import events
from common.lake import Lake
from consumers.deadletters import coordinates
from inferstream.lakecheck import Landing, landing

FEATURES = [f"f{i:02d}" for i in range(30)]
# addresses of embedded Tansu brokers started by the suite: no idempotent producer there
TANSU_ADDRESSES: set[str] = set()

# the suite's PostgreSQL (``make test`` starts it): INFERSTREAM_TEST_POSTGRES_DSN overrides
# it, as a URL (postgresql://user@host:port/db), since tests put a proxy in front of it
PG_DSN = os.environ.get("INFERSTREAM_TEST_POSTGRES_DSN") or "postgresql://postgres@127.0.0.1:5432/test"


def pg_address() -> tuple[str, int]:
    """The host and port of ``PG_DSN``'s server."""
    parts = urlsplit(PG_DSN)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def pg_dsn_via(port: int) -> str:
    """``PG_DSN`` reached through 127.0.0.1:``port`` (a ``TcpProxy`` in front of it)."""
    parts = urlsplit(PG_DSN)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{port}"))


SEED_ENV = "INFERSTREAM_TEST_SEED"
# the events' feature values; reseeded with each test's seed (the autouse ``seed`` fixture)
EVENT_RNG = random.Random(0)


def test_seed(what: str) -> int:
    """The seed of ``what``'s randomness: ``INFERSTREAM_TEST_SEED`` if set (to replay a
    run), else a fresh one. Printed, so that a failing test's captured output names it."""
    raw = os.environ.get(SEED_ENV, "").strip()
    seed = int(raw) if raw else random.SystemRandom().randrange(1 << 30)
    print(f"{what}: random seed {seed} (replay with {SEED_ENV}={seed})", flush=True)
    return seed


test_seed.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test for pytest to collect


def wait_until(
    predicate: Callable[[], Any],
    timeout_s: float,
    what: str,
    interval_s: float = 0.2,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """``predicate()``'s first truthy value, polled every ``interval_s`` until
    ``timeout_s`` has passed; then an AssertionError naming ``what`` (and whatever
    ``on_timeout`` adds, e.g. a process's log). The predicate may assert to fail early."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() >= deadline:
            detail = f"\n{on_timeout()}" if on_timeout is not None else ""
            raise AssertionError(f"{what}: not within {timeout_s:g} s{detail}")
        time.sleep(interval_s)


def make_event(model: str = "m") -> dict[str, object]:
    feats: dict[str, object] = {f: round(EVENT_RNG.gauss(10, 3), 4) for f in FEATURES}
    return events.build_event(
        event_id=events.uuid7(),
        event_time=events.utcnow(),
        model_name=model,
        model_version="1",
        features=feats,
        prediction=EVENT_RNG.randint(0, 1),
        scores={"0": 0.3, "1": 0.7},
        latency_ms=0.2,
    )


def poison_value(i: int) -> bytes | None:
    """Five kinds of poison, in turn."""
    ev = make_event()
    kind = i % 5
    if kind == 0:
        return b"not json {"
    if kind == 1:
        ev["schema_version"] = 99
    elif kind == 2:
        del ev["model_name"]
    elif kind == 3:
        return b"[1, 2, 3]"
    else:
        ev["event_id"] = 12345  # wrong type
    return events.encode(ev)


class Stream(threading.Thread):
    """Produces ``n`` valid events (and after every ``poison_every``-th one a poison
    record) in bursts, as a live stream."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        n: int,
        burst: int = 100,
        pause_s: float = 0.05,
        poison_every: int = 0,
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.n, self.burst, self.pause_s = bootstrap, topic, n, burst, pause_s
        self.poison_every = poison_every
        self.ids: list[str] = []
        self.poison: dict[tuple[int, int], bytes | None] = {}  # (partition, offset) → value
        self.error: BaseException | None = None
        self._hurry = threading.Event()

    def hurry(self) -> None:
        """The rest of the ``n`` events without pauses (the scenario that needed a live
        stream is over)."""
        self._hurry.set()

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:
            self.error = exc

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        sent = 0
        try:
            while sent < self.n:
                futures = []
                for _ in range(min(self.burst, self.n - sent)):
                    sent += 1
                    if self.poison_every and sent % self.poison_every == 0:
                        value = poison_value(sent // self.poison_every)
                        fut = await producer.send(self.topic, value, key=str(sent).encode())
                        futures.append((fut, value))
                    ev = make_event()
                    fut = await producer.send(
                        self.topic, events.encode(ev), key=events.event_key(ev["event_id"])
                    )
                    futures.append((fut, None))
                    self.ids.append(str(ev["event_id"]))
                for fut, value in futures:
                    meta = await fut
                    if value is not None:
                        self.poison[(meta.partition, meta.offset)] = value
                if not self._hurry.is_set():
                    await asyncio.sleep(self.pause_s)
        finally:
            await producer.stop()


def read_values(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[bytes]:
    """The values of ``topic`` from the beginning, once ``expected`` are there (or the
    time is up: the caller asserts the count)."""

    async def read() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        out: list[bytes] = []
        try:
            deadline = time.monotonic() + timeout_s
            while len(out) < expected and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=300)).values():
                    out.extend(m.value for m in msgs if m.value is not None)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


def read_dlq(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    """The records of the dead-letter topic (all partitions), once ``expected`` are there."""

    async def read() -> list:
        # subscribed without a group: every partition, from the earliest offset
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        out: list = []
        try:
            deadline = time.monotonic() + timeout_s
            while len(out) < expected and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(msgs)
            # anything beyond ``expected`` (a duplicate, or another group's letters) gets
            # until a second passes with nothing new: one getmany returns at the first
            # partition with records, and the rest were once missed that way (bounded: a
            # topic still being written ends the read 5 s past the deadline)
            while time.monotonic() < deadline + 5 and (got := await consumer.getmany(timeout_ms=1000)):
                for msgs in got.values():
                    out.extend(msgs)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


def committed(bootstrap: str, group: str, partitions: list[TopicPartition]) -> dict[int, int]:
    """The group's committed offset of each partition that has one."""
    from common.topics import start_admin

    async def read() -> dict[int, int]:
        admin = await start_admin(bootstrap)
        try:
            found = await admin.list_consumer_group_offsets(group, partitions=partitions)
        except GroupCoordinatorNotAvailableError:
            return {}  # a fresh cluster still creating __consumer_offsets: nothing committed yet
        finally:
            await admin.close()
        return {tp.partition: m.offset for tp, m in found.items() if m is not None and m.offset >= 0}

    return asyncio.run(read())


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of each partition of ``topic``."""

    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()  # fetches the metadata partitions_for_topic reads
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def wait_committed(
    bootstrap: str, group: str, topic: str, procs: Sequence[Any] = (), timeout_s: float = 60.0
) -> None:
    """Until ``group`` has committed every record ``topic`` holds now (the end offset of
    each partition): all of them read and made durable, since every consumer commits
    after its sink's work (a lander's rows, a monitor's alerts) is done. Fails at once if
    every process in ``procs`` has exited."""
    ends = end_offsets(bootstrap, topic)
    tps = [TopicPartition(topic, p) for p in ends]

    def done() -> bool:
        assert not procs or any(p.alive() for p in procs), "\n".join(p.tail() for p in procs)
        got = committed(bootstrap, group, tps)
        return all(got.get(p, 0) >= end for p, end in ends.items())

    wait_until(
        done,
        timeout_s,
        f"group {group} committing {topic} up to {ends}",
        interval_s=0.5,
        on_timeout=lambda: f"committed: {committed(bootstrap, group, tps)}",
    )


def dlq_coordinates(records: list) -> dict[tuple[int, int], tuple[str, bytes | None]]:
    out = {}
    for rec in records:
        topic, partition, offset, reason = coordinates(rec.headers)
        out[(partition, offset)] = (reason, rec.value)
    return out


def lake_records(
    tp: TopicPartition, first: int, last: int, when: Callable[[int], datetime]
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of valid events at offsets ``first``..``last`` of ``tp`` (event time
    ``when(offset)``), to drive a lake sink directly."""
    out = []
    for off in range(first, last + 1):
        ev = events.build_event(
            event_id=events.uuid7(),
            event_time=when(off),
            model_name="m",
            model_version="1",
            features={"x": float(off)},
            prediction=1,
            scores=None,
            latency_ms=0.1,
        )
        out.append(ConsumerRecord(tp.topic, tp.partition, off, 0, 0, None, events.encode(ev), None, 0, 0, ()))
    return out


def api_env(model: Any, bootstrap: str, topic: str, port: int) -> dict[str, str]:
    """The environment of an ``inferstream api`` process serving the test model
    (``trained_model`` fixture) on ``port``, publishing to ``topic``, without API keys."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "INFERSTREAM_DATA_DIR": str(model.data_dir),
        "INFERSTREAM_EVENTS_TOPIC": topic,
        "INFERSTREAM_MODEL_NAME": model.name,
        "INFERSTREAM_MODEL_VERSION": model.version,
        "INFERSTREAM_PORT": str(port),
        "INFERSTREAM_AUTH_ENABLED": "false",
        "INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE": str(bootstrap not in TANSU_ADDRESSES).lower(),
    }


def consumer_env(bootstrap: str, topic: str, data_dir: Path, group: str, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "INFERSTREAM_DATA_DIR": str(data_dir),
        "INFERSTREAM_EVENTS_TOPIC": topic,
        "INFERSTREAM_DLQ_TOPIC": f"{topic}.dlq",
        "INFERSTREAM_FEEDBACK_TOPIC": f"{topic}.feedback",
        "INFERSTREAM_ALERTS_TOPIC": f"{topic}.alerts",
        "INFERSTREAM_GROUP_ID": group,
        "INFERSTREAM_MAX_BATCH_ROWS": "500",
        "INFERSTREAM_MAX_BATCH_AGE_S": "0.3",
        **extra,
    }


def wait_for_log(child, text: str, timeout_s: float = 60.0, count: int = 1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert child.alive(), f"{child.name} exited:\n{child.tail()}"
        if child.log_path.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{child.name} did not log {text!r} in {timeout_s}s:\n{child.tail()}")


class TcpProxy:
    """A TCP forwarder on a loopback port that a test can cut and restore, to make a
    dependency (PostgreSQL) unreachable without stopping the shared server."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        import socket

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        import socket

        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() so the port frees
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run Debian's promtool (installed by .ci/ensure-promtool); fails, never skips, without it."""
    exe = shutil.which("promtool")
    assert exe, "promtool is not installed: run .ci/ensure-promtool (make test does)"
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def wait_landed(where: Lake | Path, ids: list[str], procs: list[Any], timeout_s: float = 90.0) -> Landing:
    """What of ``ids`` is in the lake's events table, once all are there or the time is
    up (the caller asserts); fails at once if every process in ``procs`` has exited."""
    deadline = time.monotonic() + timeout_s
    result = landing(where, ids)
    while result.missing and time.monotonic() < deadline:
        assert any(p.alive() for p in procs), "\n".join(p.tail() for p in procs)
        time.sleep(0.3)
        result = landing(where, ids)
    return result


ALERT_RULES = Path(__file__).resolve().parents[1] / "deployments" / "prometheus" / "alerts.yaml"


def streaming_drift_alerts(exposition: str, tmp: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Feed a scrape of the drift monitor's /metrics, held for 10 minutes, to the shipped
    rules (``promtool test rules``), expecting InferstreamStreamingDrift at 5m for each
    column whose ``inferstream_drift_in_episode`` is 1 there, with the labels and summary
    an operator gets. Returns those columns and promtool's result (rc 0: as expected)."""
    import json
    import math

    from prometheus_client.parser import text_string_to_metric_families

    series, expected, columns = [], [], set()
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if not math.isfinite(s.value):
                continue
            labels = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(s.labels.items()))
            series.append({"series": f"{s.name}{{{labels}}}", "values": f"{s.value:.12f}x10"})
            if s.name == "inferstream_drift_in_episode" and s.value == 1:
                m, v, c = s.labels["model"], s.labels["version"], s.labels["column"]
                columns.add(c)
                expected.append(
                    {
                        "exp_labels": {"severity": "warning", "model": m, "version": v, "column": c},
                        "exp_annotations": {
                            "summary": f"{m} v{v}: column {c} is drifting in live traffic",
                            "description": "The drift monitor opened an episode "
                            "(drift_episode_opened on the alerts topic).",
                        },
                    }
                )
    test = {
        "rule_files": [str(ALERT_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "InferstreamStreamingDrift", "exp_alerts": expected}
                ],
            }
        ],
    }
    path = tmp / "streaming_drift_test.yaml"
    path.write_text(json.dumps(test))  # JSON is YAML
    return columns, promtool("test", "rules", str(path))


def api_counter(port: int, name: str) -> float:
    """The sum of a metric's samples on a process's /metrics (every label set): an API's,
    or a consumer's (``INFERSTREAM_METRICS_PORT``)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def wait_published(port: int, expected: int, timeout_s: float = 30.0) -> float:
    """The API's published-events counter once it reaches ``expected`` (the API
    publishes in the background), or when the time is up (the caller asserts)."""
    deadline = time.monotonic() + timeout_s
    while (n := api_counter(port, "inferstream_events_published_total")) < expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return n
