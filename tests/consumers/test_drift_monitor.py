"""The streaming drift monitor's pure logic: windows, the batch tests, episodes, alerts."""

from __future__ import annotations

import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import orjson
import polars as pl
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from common import events
from consumers.drift import DriftSink, episodes_from_alerts
from consumers.drift_episodes import CLOSED, OPENED, Episodes
from consumers.drift_window import Reference, Window
from monitoring import drift

KINDS = {"x": "num", "color": "cat", "flag": "cat", "prediction": "cat", "score": "num"}


def _rows(n: int, shift: float = 0.0, seed: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    return [
        {
            "x": rnd.gauss(10 + shift, 2),
            "color": rnd.choice(["red", "blue"] if not shift else ["red", "green"]),
            "flag": rnd.random() < 0.5,
            "prediction": rnd.randint(0, 1),
            "score": rnd.random(),
        }
        for _ in range(n)
    ]


def _reference() -> Reference:
    frame = pl.DataFrame(_rows(3000, seed=1))
    return Reference.from_frame("m", "1", frame, KINDS, score_label="1")


def _event(row: dict, model: str = "m") -> dict:
    return events.build_event(
        event_id=events.uuid7(),
        event_time=events.utcnow(),
        model_name=model,
        model_version="1",
        features={"x": row["x"], "color": row["color"], "flag": row["flag"]},
        prediction=row["prediction"],
        scores={"0": 1 - row["score"], "1": row["score"]},
        latency_ms=0.1,
    )


def test_episode_opens_after_k_over_and_closes_after_k_under_once_each():
    ep = Episodes(3)
    key = ("m", "1", "x")
    verdicts = [True, True, False, True, True, True, True, True, False, False, True, False, False, False]
    out = [ep.observe(key, v, str(i)) for i, v in enumerate(verdicts)]
    kinds = [(i, t.kind) for i, t in enumerate(out) if t is not None]
    assert kinds == [(5, OPENED), (13, CLOSED)]
    assert out[5].episode_id == out[13].episode_id


def test_a_restored_episode_is_not_opened_again_and_still_closes():
    ep = Episodes(2)
    key = ("m", "1", "x")
    ep.restore(key, "e1")
    assert [ep.observe(key, True, str(i)) for i in range(5)] == [None] * 5
    ep.observe(key, False, "a")
    t = ep.observe(key, False, "b")
    assert t is not None and t.kind == CLOSED and t.episode_id == "e1"


def test_the_window_gives_the_batch_librarys_verdicts_on_the_same_rows():
    ref = _reference()
    window = Window(ref, size=500)
    rows = _rows(800, shift=1.5, seed=2)
    for r in rows:
        window.add(_event(r))
    got = {r.column: r for r in window.evaluate()}
    cur = pl.DataFrame(rows[-500:]).with_columns(
        pl.col("flag").cast(pl.String).str.to_lowercase(), pl.col("prediction").cast(pl.String)
    )
    ref_frame = pl.DataFrame(_rows(3000, seed=1)).with_columns(
        pl.col("flag").cast(pl.String).str.to_lowercase(), pl.col("prediction").cast(pl.String)
    )
    want = drift(ref_frame, cur, schema=KINDS)
    assert set(got) == set(KINDS)
    for col in KINDS:
        assert (got[col].method, got[col].score, got[col].drifted) == (
            want[col].method,
            want[col].score,
            want[col].drifted,
        ), col
    assert got["x"].drifted and got["color"].drifted and not got["flag"].drifted


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _records(rows: list[dict], start: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord("t", 0, start + i, 0, 0, None, events.encode(_event(r)), None, 0, 0, ())
        for i, r in enumerate(rows)
    ]


def test_the_sink_alerts_once_on_open_and_once_on_close_with_gauges():
    clock = _Clock()
    registry = CollectorRegistry()
    sink = DriftSink(
        load_reference=lambda m, v: _reference(),
        window_events=400,
        min_events=400,
        eval_interval_s=1.0,
        consecutive=2,
        registry=registry,
        clock=clock,
    )
    tp = TopicPartition("t", 0)
    offset = 0
    alerts: list[dict] = []
    # 8 evaluations of stable data, 10 of drifted, 10 stable again: 400 new events each
    for phase, shift in (("stable", 0.0), ("drifted", 3.0), ("back", 0.0)):
        for step in range(10 if phase != "stable" else 8):
            clock.now += 1.0
            sink.add(tp, _records(_rows(400, shift=shift, seed=offset), offset))
            offset += 400
            sink.flush()
            alerts += [orjson.loads(o.value) for o in sink.take_outputs()]
            if phase == "drifted" and step == 5:
                assert (
                    registry.get_sample_value(
                        "inferstream_drift_in_episode", {"model": "m", "version": "1", "column": "x"}
                    )
                    == 1
                )
    x_alerts = [(a["kind"], a["column"]) for a in alerts if a["column"] == "x"]
    assert x_alerts == [(OPENED, "x"), (CLOSED, "x")]
    assert {a["kind"] for a in alerts} == {OPENED, CLOSED}
    assert sink.evaluations == 28
    assert (
        registry.get_sample_value(
            "inferstream_drift_in_episode", {"model": "m", "version": "1", "column": "x"}
        )
        == 0
    )
    # fraud alerts on the same topic are ignored; the last word per column counts
    fraud = orjson.dumps({"kind": "feature_outlier", "model_name": "m"})
    raw = [fraud, *[orjson.dumps(a) for a in alerts[:1]]]
    assert episodes_from_alerts(raw) == {("m", "1", alerts[0]["column"]): alerts[0]["episode_id"]}
    assert episodes_from_alerts([orjson.dumps(a) for a in alerts]) == {}


def test_a_model_without_an_artifact_is_skipped_not_fatal():
    def missing(m: str, v: str) -> Reference:
        raise FileNotFoundError("no reference.parquet")

    sink = DriftSink(load_reference=missing, window_events=10, min_events=10, eval_interval_s=0)
    sink.add(TopicPartition("t", 0), _records(_rows(20), 0))
    assert sink.windows == {} and sink.maybe_evaluate(force=True) == []


def test_a_restart_reads_the_window_back_and_dead_letters_only_new_poison():
    sink = DriftSink(load_reference=lambda m, v: _reference(), window_events=300, min_events=300)
    a, b, c = (TopicPartition("t", p) for p in range(3))
    committed = {a: (1000, ""), b: (100, ""), c: (None, "")}
    sink.assigned(committed)
    assert sink.rewind(committed) == {a: 700, b: 0}
    replayed = _records(_rows(300), 700)
    poison = [
        ConsumerRecord("t", 0, 998, 0, 0, None, b"not json", None, 0, 0, ()),
        ConsumerRecord("t", 0, 1000, 0, 0, None, b"not json", None, 0, 0, ()),
    ]
    sink.add(a, replayed[:-2] + poison)
    assert len(sink.windows[("m", "1")]) == 298  # the window is rebuilt from the replayed records
    sink.flush()
    assert [d.offset for d in sink.take_dead_letters()] == [1000]


def test_episode_alerts_reach_the_webhook_once_and_a_dead_webhook_stops_nothing():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            received.append(orjson.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        outputs = []
        for url in (f"http://127.0.0.1:{server.server_port}/hook", "http://127.0.0.1:9/closed"):
            clock = _Clock()
            registry = CollectorRegistry()
            sink = DriftSink(
                load_reference=lambda m, v: _reference(),
                window_events=400,
                min_events=400,
                eval_interval_s=1.0,
                consecutive=2,
                clock=clock,
                registry=registry,
                webhook_url=url,
                webhook_timeout_s=2.0,
            )
            offset = 0
            for shift in [3.0] * 4 + [0.0] * 4:
                clock.now += 1.0
                sink.add(TopicPartition("t", 0), _records(_rows(400, shift=shift, seed=offset), offset))
                offset += 400
                sink.flush()
                outputs.append([orjson.loads(o.value) for o in sink.take_outputs()])
    finally:
        server.shutdown()
    first_run = [a for batch in outputs[:8] for a in batch]
    second_run = [a for batch in outputs[8:] for a in batch]
    assert first_run and received == first_run  # each alert once, as published
    assert second_run and [a["kind"] for a in second_run] == [a["kind"] for a in first_run]
    assert registry.get_sample_value("inferstream_drift_webhook_failures_total") == len(second_run)


def test_the_monitors_metrics_pass_promtool_and_fire_the_shipped_streaming_drift_alert(tmp_path):
    """What the monitor serves on its metrics port during an episode: valid exposition
    (no `_created` families), scores per model, version and column, and the shipped
    InferstreamStreamingDrift rule fires on exactly the columns in an episode."""
    from prometheus_client import generate_latest

    from ..support import promtool, streaming_drift_alerts  # noqa: TID252

    clock = _Clock()
    registry = CollectorRegistry()
    sink = DriftSink(
        load_reference=lambda m, v: _reference(),
        window_events=400,
        min_events=400,
        eval_interval_s=1.0,
        consecutive=2,
        registry=registry,
        clock=clock,
    )
    tp = TopicPartition("t", 0)
    for step, shift in enumerate([0.0] * 3 + [3.0] * 4):
        clock.now += 1.0
        sink.add(tp, _records(_rows(400, shift=shift, seed=step), step * 400))
        sink.flush()
        sink.take_outputs()
    text = generate_latest(registry).decode()
    assert "_created" not in text
    check = promtool("check", "metrics", stdin=text)
    assert check.returncode == 0, check.stdout + check.stderr
    scores = {
        s.labels["column"]: s.labels["method"]
        for f in registry.collect()
        for s in f.samples
        if s.name == "inferstream_drift_score" and (s.labels["model"], s.labels["version"]) == ("m", "1")
    }
    assert set(scores) == set(KINDS), scores  # a score per column, with its method
    columns, result = streaming_drift_alerts(text, tmp_path)
    assert "x" in columns and "flag" not in columns, columns
    assert result.returncode == 0, result.stdout + result.stderr
