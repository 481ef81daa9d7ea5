"""The drift monitor's episode alerts land in the lake's drift_episodes table (the lake
group reads inference-alerts), where the hourly drift flow finds the episodes of its
window (flows.episodes)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from common import events, lake
from common.topics import ensure_topics
from consumers.drift_episodes import CLOSED, OPENED
from consumers.episodes import EpisodesLakeSink
from flows.episodes import read_episodes
from flows.window import Window
from inferstream.lakecheck import landing
from inferstream.procs import Child

from ..support import consumer_env, make_event
from .test_drift_monitor import _Clock, _episode_sink, _records, _rows


def _monitor_alerts() -> list[bytes]:
    """Alert values as the monitor publishes them: one episode per shifted column,
    opened and then closed (the monitor's own code makes them)."""
    clock = _Clock()
    sink = _episode_sink(clock)
    out, offset = [], 0
    for shift in [0.0] * 2 + [3.0] * 4 + [0.0] * 4:
        clock.now += 1.0
        sink.add(TopicPartition("t", 0), _records(_rows(400, shift=shift, seed=offset), offset))
        offset += 400
        sink.flush()
        out += [o.value for o in sink.take_outputs()]
    return out


FRAUD = orjson.dumps({"alert_id": "f1", "kind": "feature_outlier", "model_name": "m", "score": 9.0})


def _window_around_now() -> Window:
    now = datetime.now(UTC)
    return Window(now - timedelta(hours=1), now + timedelta(minutes=1))


def test_the_episodes_sink_lands_episode_alerts_only_once_each_and_the_flow_reads_them(tmp_path):
    alerts = _monitor_alerts()
    kinds = [orjson.loads(a)["kind"] for a in alerts]
    assert kinds.count(OPENED) == kinds.count(CLOSED) >= 1
    tp = TopicPartition("inference-alerts", 0)
    values = [FRAUD, *alerts, b"not json", b'{"kind": "drift_episode_opened"}']
    recs = [ConsumerRecord(tp.topic, 0, i, 0, 0, None, v, None, 0, 0, ()) for i, v in enumerate(values)]
    sink = EpisodesLakeSink(tmp_path)
    sink.assigned({tp: (None, "inc")})
    sink.add(tp, recs)
    assert sink.flush() == {tp: (len(values), "inc")}
    assert sink.take_dead_letters() == [] and sink.skipped == 3
    # a replay of the same records lands nothing twice
    sink.add(tp, recs)
    sink.flush()
    size = lake.table_size(tmp_path, lake.EPISODES_TABLE)
    assert size is not None and size.rows == len(alerts)

    eps = read_episodes(tmp_path, "m", "1", _window_around_now())
    opened = [orjson.loads(a) for a in alerts if orjson.loads(a)["kind"] == OPENED]
    assert eps is not None
    assert sorted((e["column"], e["episode_id"]) for e in eps) == sorted(
        (a["column"], a["episode_id"]) for a in opened
    )
    assert all(e["opened_in_window"] and not e["open_at_end"] and e["closed_at"] for e in eps)
    # another version, an earlier window: nothing; a lake without the table: unknown
    assert read_episodes(tmp_path, "m", "2", _window_around_now()) == []
    past = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC))
    assert read_episodes(tmp_path, "m", "1", past) == []
    assert read_episodes(tmp_path / "elsewhere", "m", "1", past) is None


def test_an_episode_open_across_the_window_is_listed_with_its_state(tmp_path):
    t0 = datetime(2026, 3, 1, 10, tzinfo=UTC)

    def alert(kind: str, episode: str, column: str, at: datetime) -> bytes:
        return orjson.dumps(
            {
                "alert_id": f"{kind}:{episode}",
                "kind": kind,
                "episode_id": episode,
                "model_name": "m",
                "model_version": "1",
                "column": column,
                "method": "ks",
                "score": 0.001,
                "threshold": 0.05,
                "window_events": 5000,
                "consecutive_evaluations": 3,
                "alerted_at": at.astimezone(UTC).astimezone().isoformat(),  # the monitor's local zone
            }
        )

    values = [
        alert(OPENED, "before", "a", t0 - timedelta(hours=2)),  # open all through the window
        alert(OPENED, "early", "b", t0 - timedelta(minutes=5)),
        alert(CLOSED, "early", "b", t0 + timedelta(minutes=10)),
        alert(OPENED, "inside", "c", t0 + timedelta(minutes=20)),
        alert(OPENED, "done", "d", t0 - timedelta(hours=3)),
        alert(CLOSED, "done", "d", t0 - timedelta(hours=1)),  # closed before: not listed
        alert(OPENED, "after", "e", t0 + timedelta(hours=1)),  # opened at the end: not listed
    ]
    tp = TopicPartition("inference-alerts", 0)
    sink = EpisodesLakeSink(tmp_path)
    sink.assigned({tp: (None, "inc")})
    sink.add(
        tp, [ConsumerRecord(tp.topic, 0, i, 0, 0, None, v, None, 0, 0, ()) for i, v in enumerate(values)]
    )
    sink.flush()
    eps = read_episodes(tmp_path, "m", "1", Window(t0, t0 + timedelta(hours=1)))
    assert eps is not None
    got = {e["episode_id"]: (e["column"], e["opened_in_window"], e["open_at_end"]) for e in eps}
    assert got == {"before": ("a", False, True), "early": ("b", False, False), "inside": ("c", True, True)}
    assert [e["episode_id"] for e in eps] == ["before", "early", "inside"]
    assert eps[1]["closed_at"] == (t0 + timedelta(minutes=10)).isoformat()


@pytest.mark.slow
def test_the_lake_consumer_lands_the_monitors_episodes_beside_the_events(kafka_bootstrap, topic, tmp_path):
    alerts_topic = f"{topic}.alerts"
    asyncio.run(ensure_topics(kafka_bootstrap, {alerts_topic: 2, f"{topic}.feedback": 2}))
    alerts = _monitor_alerts()
    evs = [make_event() for _ in range(30)]

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await p.start()
        try:
            futs = [await p.send(topic, events.encode(e), key=events.event_key(e["event_id"])) for e in evs]
            futs += [await p.send(alerts_topic, FRAUD, key=b"m")]
            futs += [
                await p.send(alerts_topic, a, key="|".join(("m", "1", orjson.loads(a)["column"])).encode())
                for a in alerts
            ]
            await asyncio.gather(*futs)
        finally:
            await p.stop()

    asyncio.run(produce())
    env = consumer_env(kafka_bootstrap, topic, tmp_path, "lake-episodes")
    lander = Child("lander", ["consume", "lake"], env, tmp_path / "lander.log")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            size = lake.table_size(tmp_path / "lake", lake.EPISODES_TABLE)
            if size is not None and size.rows >= len(alerts):
                break
            assert lander.alive(), lander.tail()
            time.sleep(0.3)
    finally:
        lander.terminate()
    eps = read_episodes(tmp_path / "lake", "m", "1", _window_around_now())
    assert eps is not None
    opened = {orjson.loads(a)["episode_id"] for a in alerts if orjson.loads(a)["kind"] == OPENED}
    assert {e["episode_id"] for e in eps} == opened and all(e["closed_at"] for e in eps)
    assert lake.table_size(tmp_path / "lake", lake.EPISODES_TABLE).rows == len(alerts)
    assert landing(tmp_path / "lake", [e["event_id"] for e in evs]).rows == 30
