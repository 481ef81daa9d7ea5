"""The fraud scorer: its scores on constructed streams, and, as a real process next to
a running API, proof that a new consumer group changes nothing on the API side."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from common import events
from common.broker import free_port
from consumers.fraud import FraudSink
from inferstream.lakecheck import landing
from inferstream.procs import Child, wait_ready

from ..support import api_counter, api_env, consumer_env, read_dlq, wait_for_log, wait_published

TP = TopicPartition("inference-events", 0)
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _rec(offset: int, *, seconds: float, x: float, client: str | None = None) -> ConsumerRecord:
    ev = events.build_event(
        event_id=events.uuid7(),
        event_time=T0 + timedelta(seconds=seconds),
        model_name="m",
        model_version="1",
        features={"x": x, "c": "a", "b": True},
        prediction=1,
        scores=None,
        latency_ms=0.1,
    )
    headers = (("client", client.encode()),) if client else ()
    return ConsumerRecord(TP.topic, 0, offset, 0, 0, None, events.encode(ev), None, 0, 0, headers)


def test_rate_and_outlier_scores_alert_once_each():
    sink = FraudSink(
        alerts_topic="alerts", window_s=10, rate_threshold=20, zscore_threshold=6, min_samples=100
    )
    recs = [
        _rec(i, seconds=i, x=10 + (i % 7) * 0.1, client="steady") for i in range(300)
    ]  # 1/s: no rate alert
    recs += [_rec(300 + i, seconds=300 + i * 0.1, x=10.3, client="burst") for i in range(40)]  # 10/s
    recs.append(_rec(340, seconds=305, x=500.0, client="steady"))  # a wild feature value
    sink.add(TP, recs)
    assert sink.flush() == {TP: (341, "")}
    outputs = sink.take_outputs()
    alerts = [orjson.loads(o.value) for o in outputs]
    kinds = sorted((a["kind"], a["client"]) for a in alerts)
    assert kinds == [("feature_outlier", "steady"), ("request_rate", "burst")]
    outlier = next(a for a in alerts if a["kind"] == "feature_outlier")
    assert outlier["detail"]["feature"] == "x" and outlier["score"] > 6
    assert outlier["event_id"] == events.decode(recs[-1].value)["event_id"]
    # a replay of the same events gives alerts with the same ids
    again = FraudSink(
        alerts_topic="alerts", window_s=10, rate_threshold=20, zscore_threshold=6, min_samples=100
    )
    again.add(TP, recs)
    again.flush()
    replayed = again.take_outputs()
    assert len(replayed) == 2 and sorted(o.key for o in replayed) == sorted(o.key for o in outputs)


def test_warm_history_moves_the_statistics_but_raises_no_alert():
    def sink() -> FraudSink:
        return FraudSink(
            alerts_topic="alerts", window_s=10, rate_threshold=1e9, zscore_threshold=6, min_samples=100
        )

    history = [_rec(i, seconds=i, x=10 + (i % 7) * 0.1) for i in range(150)]
    history.append(_rec(150, seconds=150, x=500.0))  # alerted by the previous owner
    restarted = sink()
    assert restarted.history_records >= 100
    restarted.warm(TP, history)
    assert restarted.flush() == {} and restarted.take_outputs() == []  # nothing to commit or send
    wild = _rec(151, seconds=151, x=500.0)
    restarted.add(TP, [wild])
    assert restarted.flush() == {TP: (152, "")}
    alerts = [orjson.loads(o.value) for o in restarted.take_outputs()]
    assert [a["event_id"] for a in alerts] == [events.decode(wild.value)["event_id"]]
    # without the history, a restarted scorer would be cold and miss it
    cold = sink()
    cold.add(TP, [wild])
    cold.flush()
    assert cold.take_outputs() == []


def test_a_value_near_the_float_limit_does_not_blind_the_outlier_score():
    sink = FraudSink(alerts_topic="alerts", rate_threshold=10**6, zscore_threshold=6, min_samples=100)
    recs = [_rec(0, seconds=0, x=1e308, client="c"), _rec(1, seconds=1, x=-1e200, client="c")]
    recs += [_rec(2 + i, seconds=2 + i, x=10 + (i % 7) * 0.1, client="c") for i in range(200)]
    recs.append(_rec(202, seconds=202, x=500.0, client="c"))
    sink.add(TP, recs)
    assert sink.flush() == {TP: (203, "")}
    alerts = [orjson.loads(o.value) for o in sink.take_outputs()]
    assert [(a["kind"], a["detail"]["value"]) for a in alerts] == [("feature_outlier", 500.0)]
    assert sink.take_dead_letters() == []


@pytest.mark.slow
def test_a_new_fraud_consumer_group_changes_nothing_on_the_api_side(
    trained_model, kafka_bootstrap, topic, tmp_path
):
    port = free_port()
    api = Child("api", ["api"], api_env(trained_model, kafka_bootstrap, topic, port), tmp_path / "api.log")
    lander = Child(
        "lander",
        ["consume", "lake"],
        consumer_env(kafka_bootstrap, topic, tmp_path, "lake-f"),
        tmp_path / "lander.log",
    )
    fraud = None
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", api)
        rows = trained_model.rows

        def send(batch: list[dict]) -> list[str]:
            async def go() -> list[str]:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                    sem = asyncio.Semaphore(8)

                    async def one(row: dict) -> str:
                        async with sem:
                            r = await client.post("/v1/predict", json={"features": row})
                            assert r.status_code == 200, r.text
                            return str(r.json()["prediction_id"])

                    return list(await asyncio.gather(*(one(r) for r in batch)))

            return asyncio.run(go())

        before_ids = send([rows[i % len(rows)] for i in range(300)])
        assert wait_published(port, 300) == 300
        fraud = Child(
            "fraud",
            ["consume", "fraud"],
            consumer_env(kafka_bootstrap, topic, tmp_path, "fraud-f", INFERSTREAM_FRAUD_ZSCORE_THRESHOLD="8"),
            tmp_path / "fraud.log",
        )
        wait_for_log(fraud, "assigned group=", timeout_s=90)
        # an outlier the model accepts: one feature far outside its training range
        wild = dict(rows[0])
        wild["mean_area"] = float(wild["mean_area"]) * 40
        after_ids = send([rows[i % len(rows)] for i in range(300)] + [wild])
        api_pid_unchanged = api.alive()
        # the API published every event, dropped none, and was never restarted or reconfigured
        assert wait_published(port, 601) == 601
        assert api_counter(port, "inferstream_events_dropped_total") == 0
        assert api_pid_unchanged
        # the existing group still lands every event exactly once
        ids = before_ids + after_ids
        deadline = time.monotonic() + 60
        while landing(tmp_path / "lake", ids).distinct < len(ids) and time.monotonic() < deadline:
            time.sleep(0.3)
        result = landing(tmp_path / "lake", ids)
        assert (result.rows, result.distinct) == (601, 601)
        # and the new group read the whole stream on its own, alerting on the outlier
        # early events can be outliers too (few events seen yet): read until the wild one's
        # alert is there, which a later transaction may carry
        deadline = time.monotonic() + 30
        while True:
            alerts = read_dlq(kafka_bootstrap, f"{topic}.alerts", expected=10**9, timeout_s=2)
            bodies = [orjson.loads(a.value) for a in alerts]
            found = any(b["kind"] == "feature_outlier" and b["event_id"] == after_ids[-1] for b in bodies)
            if found or time.monotonic() > deadline:
                break
        assert found, bodies
    finally:
        if fraud is not None:
            fraud.terminate()
        lander.terminate()
        api.terminate()
    assert "records=601" in fraud.log_path.read_text()
    assert os.path.exists(api.log_path)
