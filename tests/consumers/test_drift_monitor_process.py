"""The drift monitor as a real process on a real cluster: its /metrics during an
episode fires the shipped Prometheus alert; SIGKILLed mid-episode and
restarted, it neither repeats the opening alert nor misses the closing one; started
next to a running API, it changes nothing there."""

from __future__ import annotations

import asyncio
import random
import re
import time

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from common import events
from common.broker import free_port
from inferstream.procs import Child, wait_ready

from ..support import (
    api_counter,
    api_env,
    consumer_env,
    promtool,
    read_values,
    streaming_drift_alerts,
    wait_committed,
    wait_for_log,
    wait_published,
)

SHIFTED = "mean_area"


def _produce(bootstrap: str, topic: str, model, n: int, shift: bool, seed: int) -> None:
    rnd = random.Random(seed)

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for _ in range(n):
                features = dict(rnd.choice(model.rows))
                if shift:
                    features[SHIFTED] = float(features[SHIFTED]) * 3
                ev = events.build_event(
                    event_id=events.uuid7(),
                    event_time=events.utcnow(),
                    model_name=model.name,
                    model_version=model.version,
                    features=features,
                    prediction=None,
                    scores=None,
                    latency_ms=0.1,
                )
                await producer.send(topic, events.encode(ev), key=events.uuid7().bytes)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def _alerts(bootstrap: str, topic: str, expected: int, timeout_s: float = 5.0) -> list[dict]:
    return [orjson.loads(v) for v in read_values(bootstrap, f"{topic}.alerts", expected, timeout_s)]


def _feed_until(bootstrap, topic, model, shift, want, seed, timeout_s=120.0) -> list[dict]:
    """Produce 150 events (shifted or not) every half second until ``want(alerts)``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _produce(bootstrap, topic, model, 150, shift, seed)
        seed += 1
        time.sleep(0.5)  # pacing the stream
        alerts = _alerts(bootstrap, topic, expected=10**6, timeout_s=2.0)
        if want(alerts):
            return alerts
    raise AssertionError(f"not reached in {timeout_s}s: {_alerts(bootstrap, topic, 10**6, 2.0)}")


def _kinds(alerts: list[dict], column: str) -> list[str]:
    return [a["kind"] for a in alerts if a.get("column") == column]


@pytest.mark.slow
def test_a_monitor_killed_mid_episode_neither_repeats_the_opening_nor_misses_the_close(
    trained_model, kafka_bootstrap, topic, tmp_path
):
    metrics_port = free_port()
    env = consumer_env(
        kafka_bootstrap,
        topic,
        trained_model.data_dir,
        "drift-kill",
        INFERSTREAM_DRIFT_WINDOW_EVENTS="300",
        INFERSTREAM_DRIFT_MIN_EVENTS="300",
        INFERSTREAM_DRIFT_EVAL_INTERVAL_S="0.5",
        INFERSTREAM_DRIFT_CONSECUTIVE="2",
        INFERSTREAM_METRICS_PORT=str(metrics_port),
    )
    first = Child("drift-1", ["consume", "drift"], env, tmp_path / "drift-1.log")
    second = None
    try:
        wait_for_log(first, "assigned group=drift-kill", timeout_s=90)
        _feed_until(kafka_bootstrap, topic, trained_model, False, lambda a: True, seed=0, timeout_s=5)
        opened = _feed_until(
            kafka_bootstrap,
            topic,
            trained_model,
            True,
            lambda a: "drift_episode_opened" in _kinds(a, SHIFTED),
            100,
        )
        # during the episode, the monitor's own /metrics fires the shipped alert rule
        scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert "_created" not in scrape and 'inferstream_build_info{python="' in scrape, scrape
        check = promtool("check", "metrics", stdin=scrape)
        assert check.returncode == 0, check.stdout + check.stderr
        columns, rules = streaming_drift_alerts(scrape, tmp_path)
        assert SHIFTED in columns and rules.returncode == 0, (columns, rules.stdout + rules.stderr)
        # the window is all shifted: keep it so a little longer (commits move on), then kill
        _produce(kafka_bootstrap, topic, trained_model, 300, True, seed=200)
        wait_committed(kafka_bootstrap, "drift-kill", topic, [first])
        first.kill()
        assert _kinds(opened, SHIFTED) == ["drift_episode_opened"]
        second = Child("drift-2", ["consume", "drift"], env, tmp_path / "drift-2.log")
        wait_for_log(second, "assigned group=drift-kill", timeout_s=90)
        # still shifted after the restart: the rebuilt window keeps drifting, no new opening
        _produce(kafka_bootstrap, topic, trained_model, 600, True, seed=300)
        wait_committed(kafka_bootstrap, "drift-kill", topic, [second], timeout_s=90)
        alerts = _feed_until(
            kafka_bootstrap,
            topic,
            trained_model,
            False,
            lambda a: "drift_episode_closed" in _kinds(a, SHIFTED),
            400,
        )
    finally:
        first.kill()
        if second is not None:
            second.terminate()
    assert _kinds(alerts, SHIFTED) == ["drift_episode_opened", "drift_episode_closed"], alerts
    ids = {a["episode_id"] for a in alerts if a.get("column") == SHIFTED}
    assert len(ids) == 1
    # hygiene on every column: never two openings without a close between them
    for column in {a["column"] for a in alerts}:
        kinds = _kinds(alerts, column)
        assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False)), (column, kinds)
    # the second process knew the episode from the alerts topic (not from luck)
    recovered = re.search(r"drift: recovered (\d+) open episodes", second.log_path.read_text())
    assert recovered is not None and int(recovered.group(1)) >= 1


@pytest.mark.slow
def test_starting_the_drift_monitor_changes_nothing_on_the_api_side(
    trained_model, kafka_bootstrap, topic, tmp_path
):
    port = free_port()
    api = Child("api", ["api"], api_env(trained_model, kafka_bootstrap, topic, port), tmp_path / "api.log")
    drift = None
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", api)

        def send(n: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                for i in range(n):
                    r = client.post(
                        "/v1/predict", json={"features": trained_model.rows[i % len(trained_model.rows)]}
                    )
                    assert r.status_code == 200, r.text

        send(200)
        assert wait_published(port, 200) == 200
        env = consumer_env(kafka_bootstrap, topic, trained_model.data_dir, "drift-api")
        drift = Child("drift", ["consume", "drift"], env, tmp_path / "drift.log")
        wait_for_log(drift, "assigned group=drift-api", timeout_s=90)
        pid = api.pid
        send(200)
        assert wait_published(port, 400) == 400
        assert api_counter(port, "inferstream_events_dropped_total") == 0
        assert api.alive() and api.pid == pid
        wait_committed(kafka_bootstrap, "drift-api", topic, [drift])  # it reads the whole stream on its own
    finally:
        if drift is not None:
            drift.terminate()
        api.terminate()
    assert drift is not None and "records=400" in drift.log_path.read_text(), drift.tail()


@pytest.mark.slow
def test_two_monitors_in_one_group_each_alert_on_their_own_share_of_the_partitions(
    trained_model, kafka_bootstrap, topic, tmp_path
):
    """What the README's "Scale" says happens with two processes in the group: the
    partitions are split between them, each keeps windows of its own partitions' events
    (keys are random, so a share of every model's traffic) and evaluates them alone, so a
    shift raises one episode per process (two ids, each opened and closed once), each
    alert naming the partitions it saw."""
    env = consumer_env(
        kafka_bootstrap,
        topic,
        trained_model.data_dir,
        "drift-two",
        INFERSTREAM_DRIFT_WINDOW_EVENTS="300",
        INFERSTREAM_DRIFT_MIN_EVENTS="300",
        INFERSTREAM_DRIFT_EVAL_INTERVAL_S="0.5",
        INFERSTREAM_DRIFT_CONSECUTIVE="2",
    )
    first = Child("drift-a", ["consume", "drift"], env, tmp_path / "drift-a.log")
    second = None
    try:
        wait_for_log(first, "assigned group=drift-two", timeout_s=90)
        second = Child("drift-b", ["consume", "drift"], env, tmp_path / "drift-b.log")
        wait_for_log(second, "assigned group=drift-two", timeout_s=90)
        wait_for_log(first, "assigned group=drift-two", timeout_s=90, count=2)  # the rebalance
        _feed_until(kafka_bootstrap, topic, trained_model, False, lambda a: True, seed=0, timeout_s=5)

        def openings(a: list[dict]) -> list[dict]:
            return [x for x in a if x.get("column") == SHIFTED and x["kind"] == "drift_episode_opened"]

        def closings(a: list[dict]) -> list[dict]:
            return [x for x in a if x.get("column") == SHIFTED and x["kind"] == "drift_episode_closed"]

        _feed_until(kafka_bootstrap, topic, trained_model, True, lambda a: len(openings(a)) >= 2, 100)
        alerts = _feed_until(
            kafka_bootstrap, topic, trained_model, False, lambda a: len(closings(a)) >= 2, 400
        )
        # a third opening, if there were one, is out once both have committed every event
        # (a monitor publishes its alerts before it commits)
        wait_committed(kafka_bootstrap, "drift-two", topic, [first, second])
        alerts = _alerts(kafka_bootstrap, topic, expected=10**6, timeout_s=2.0)
    finally:
        first.terminate()
        if second is not None:
            second.terminate()
    opened, closed = openings(alerts), closings(alerts)
    assert len(opened) == 2 and len(closed) == 2, _kinds(alerts, SHIFTED)
    assert {a["episode_id"] for a in opened} == {a["episode_id"] for a in closed}
    assert len({a["episode_id"] for a in opened}) == 2
    shares = [set(a["partitions"]) for a in opened]
    assert shares[0] and shares[1] and not shares[0] & shares[1]
    assert shares[0] | shares[1] == {0, 1, 2, 3}
    for child in (first, second):
        assert "drift: this process reads partitions" in child.log_path.read_text()
