"""The streaming drift monitor's pure logic: windows, the batch tests, episodes, alerts."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import orjson
import polars as pl
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from common import events
from consumers.drift import DriftSink
from consumers.drift_episodes import CLOSED, OPENED, Episodes
from consumers.drift_recover import episodes_from_alerts
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


def _episode_sink(clock: _Clock, registry: CollectorRegistry | None = None) -> DriftSink:
    """A sink that evaluates every second of ``clock`` over 400 events and opens or
    closes an episode after 2 evaluations in a row."""
    return DriftSink(
        load_reference=lambda m, v: _reference(),
        window_events=400,
        min_events=400,
        eval_interval_s=1.0,
        consecutive=2,
        registry=registry,
        clock=clock,
    )


def test_the_sink_alerts_once_on_open_and_once_on_close_with_gauges():
    clock = _Clock()
    registry = CollectorRegistry()
    sink = _episode_sink(clock, registry)
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
        def do_POST(self) -> None:
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

    from ..support import promtool, streaming_drift_alerts

    clock = _Clock()
    registry = CollectorRegistry()
    sink = _episode_sink(clock, registry)
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


def _window_rows(ref: Reference, evs: list[dict], size: int) -> pl.DataFrame:
    """The row-by-row window the ring buffers replaced: the last ``size`` events,
    each value converted with ``_num``/``_cat``, as the reference for the vectorised one."""
    from consumers.drift_window import _cat, _num

    rows = evs[-size:]
    data = {}
    for c, kind in ref.kinds.items():
        if c == "prediction":
            values = [e.get("prediction") for e in rows]
        elif c == "score":
            values = [e["scores"].get("1") if isinstance(e.get("scores"), dict) else None for e in rows]
        else:
            values = [e["features"].get(c) for e in rows]
        if kind == "num":
            data[c] = pl.Series(c, [_num(v) for v in values], dtype=pl.Float64)
        else:
            data[c] = pl.Series(c, [_cat(v) for v in values], dtype=pl.String)
    return pl.DataFrame(data)


def _odd_event(i: int) -> dict:
    """Events whose values take every type a client or a broken upstream can send."""
    x = [1.5, 2, True, None, "3.25", "abc", 2**62, 1e300][i % 8]
    color = ["red", None, True, 7, 2.5, "blue", False, "red"][i % 7]
    ev = _event({"x": 0.0, "color": "red", "flag": True, "prediction": i % 3, "score": 0.5})
    ev["features"] = {"x": x, "color": color} | ({"flag": i % 2 == 0} if i % 5 else {})
    ev["prediction"] = [1, "yes", None, 0.0, False][i % 5]
    ev["scores"] = [{"0": 0.5, "1": 0.5}, None, {"0": 1}, {"1": 1}][i % 4]
    return ev


def test_the_ring_window_holds_the_same_rows_as_the_row_by_row_one_after_wrapping():
    from polars.testing import assert_frame_equal

    ref = _reference()
    evs = [_odd_event(i) for i in range(53)]
    for size, batches in ((7, [53]), (7, [3, 9, 1, 40]), (60, [10, 43]), (1, [5, 48])):
        window, at = Window(ref, size), 0
        for k in batches:
            part = evs[at : at + k]
            window.extend(
                [e["features"] for e in part], [e["prediction"] for e in part], [e["scores"] for e in part]
            )
            at += k
            assert_frame_equal(window.frame(), _window_rows(ref, evs[:at], size))
        assert len(window) == min(size, 53)


def test_a_high_cardinality_column_keeps_only_the_labels_in_the_window():
    ref = _reference()
    window = Window(ref, 4)
    evs = [
        _event({"x": 1.0, "color": f"c{i}", "flag": False, "prediction": 0, "score": 0.1}) for i in range(500)
    ]
    for e in evs:
        window.add(e)
        window.frame()
    assert window.frame()["color"].to_list() == ["c496", "c497", "c498", "c499"]
    assert len(window._cat["color"].labels) <= 2 * 4 + 64 + 1


def test_the_fast_decoder_reads_every_record_as_the_exact_path_does():
    """msgspec (fast) and orjson + validate.decode_event (exact) must agree on what is
    poison and on every value the window keeps; plain events take the fast path."""
    from polars.testing import assert_frame_equal

    from consumers import drift as drift_mod

    plain = [events.encode(_event(r)) for r in _rows(20)]
    odd = [events.encode(_odd_event(i)) for i in range(40)]
    template = orjson.loads(plain[0])

    def variant(**change: object) -> bytes:
        return json.dumps(template | change).encode()  # stdlib: integers beyond 64 bits too

    def with_raw(field: bytes, value: bytes) -> bytes:
        return plain[0][:-1] + b',"' + field + b'":' + value + b"}"

    edge = [
        variant(features={"x": 2**63, "color": "red"}),  # orjson: int; msgspec path refuses it
        variant(features={"x": 2**64 + 1, "color": "red"}),  # orjson: a float
        variant(features={"x": 1.0, "color": 2**70}),  # a category whose text differs per parser
        plain[0][:-1].replace(b'"features":{', b'"features":{"big":' + b"9" * 400 + b",") + b"}",
        with_raw(b"extra", b'"\xff"'),  # invalid UTF-8 in a field nobody reads
        with_raw(b"extra", b"1"),
        variant(features={"x": [1, 2], "color": {"a": 1}}),
        variant(latency_ms=True),
        variant(latency_ms=5),
        variant(schema_version=1.0),
        variant(event_id=template["event_id"] + "\n"),
        variant(event_id="not-a-uuid"),
        variant(status="error"),
        variant(synthetic=True),
        variant(synthetic=1),
        variant(scores=[0.1, 0.9]),
        variant(scores={"1": "0.25"}),
        variant(prediction={"a": 1}),
        variant(http_latency_ms="slow"),
        variant(model_version="2"),
        b"[1]",
        b"not json",
        None,
        b'{"schema_version": 1}',
    ]
    assert drift_mod.decode_fast(_records_of(plain)) is not None
    assert drift_mod.decode_fast(_records_of(odd)) is not None
    assert drift_mod.decode_fast(_records_of(edge[:1])) is None

    def run(values: list[bytes | None], fast: bool) -> tuple[dict, list]:
        sink = DriftSink(load_reference=lambda m, v: _reference(), window_events=100, min_events=1)
        tp = TopicPartition("t", 0)
        decoder = drift_mod.decode_fast
        if not fast:
            drift_mod.decode_fast = lambda records: None  # type: ignore[assignment]
        try:
            for i, v in enumerate(values):  # one by one, so each record takes its own path
                sink.add(tp, [ConsumerRecord("t", 0, i, 0, 0, None, v, None, 0, 0, ())])
        finally:
            drift_mod.decode_fast = decoder
        sink.flush()
        frames = {k: w.frame() for k, w in sink.windows.items()}
        return frames, [(d.offset, d.reason) for d in sink.take_dead_letters()]

    values = plain + odd + edge
    fast_frames, fast_dead = run(values, fast=True)
    exact_frames, exact_dead = run(values, fast=False)
    assert fast_dead == exact_dead and len(exact_dead) >= 8
    assert set(fast_frames) == set(exact_frames) == {("m", "1"), ("m", "2")}
    for key, frame in exact_frames.items():
        assert_frame_equal(fast_frames[key], frame)
    assert len(exact_frames[("m", "1")]) > 70


def _records_of(values: list[bytes | None]) -> list[ConsumerRecord]:
    return [ConsumerRecord("t", 0, i, 0, 0, None, v, None, 0, 0, ()) for i, v in enumerate(values)]


def test_reading_episodes_back_from_a_silent_broker_is_bounded_logged_and_retried(caplog):
    """A broker that accepts the connection and never answers (as a node that cannot see
    a just-created topic can stall a client) must not hold the monitor's start-up
    silently: each attempt is cut at its timeout, logged, and the last one gives up
    with DependencyUnavailable."""
    import asyncio
    import socket
    import time

    import pytest

    from common.errors import DependencyUnavailable
    from consumers.drift_recover import recover_episodes

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel does), never reads or answers
    port = silent.getsockname()[1]
    try:
        caplog.set_level("WARNING", logger="consumers.drift_recover")
        t0 = time.monotonic()
        with pytest.raises(DependencyUnavailable, match="in 2 attempts"):
            asyncio.run(recover_episodes(f"127.0.0.1:{port}", "x.alerts", attempt_timeout_s=1.0, attempts=2))
        took = time.monotonic() - t0
    finally:
        silent.close()
    warned = [r.getMessage() for r in caplog.records if "reading x.alerts back failed" in r.getMessage()]
    assert len(warned) == 2, warned
    assert took < 20, took  # 2 attempts of 1 s plus back-off; unbounded would hang
