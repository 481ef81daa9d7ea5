import json
import uuid
from collections import Counter
from datetime import UTC, datetime

from aiokafka.partitioner import DefaultPartitioner

from common import events


def test_json_schema_file_is_in_sync_with_the_model():
    assert events.SCHEMA_PATH.read_text() == events.json_schema_text(), (
        "run `inferstream schema --write` after changing InferenceEvent"
    )


def test_fast_wire_form_is_a_valid_event_and_round_trips():
    eid = events.uuid7()
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    wire = events.build_event(
        event_id=eid,
        event_time=when,
        model_name="m",
        model_version="3",
        features={"a": 1.5, "b": "x", "c": True, "d": 2},
        prediction=1,
        scores={"0": 0.25, "1": 0.75},
        latency_ms=0.12,
    )
    raw = events.encode(wire)
    model = events.InferenceEvent.model_validate_json(raw)
    assert model.event_id == eid and model.event_time == when and model.status == "ok"
    assert json.loads(model.model_dump_json()) == json.loads(raw)
    assert events.decode(raw) == wire


def test_error_events_carry_status_and_reason():
    wire = events.build_event(
        event_id=events.uuid7(),
        event_time=events.utcnow(),
        model_name="m",
        model_version="1",
        features={},
        prediction=None,
        scores=None,
        latency_ms=0.0,
        status="error",
        error="boom",
    )
    model = events.InferenceEvent.model_validate_json(events.encode(wire))
    assert (model.status, model.error, model.prediction) == ("error", "boom", None)


def test_uuid7_is_version_7_and_time_ordered():
    ids = [events.uuid7() for _ in range(2000)]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    ms = [u.int >> 80 for u in ids]
    assert ms == sorted(ms)
    assert len(set(ids)) == len(ids)


def test_keys_spread_evenly_over_partitions():
    partitioner = DefaultPartitioner()
    parts = list(range(4))
    counts = Counter(partitioner(events.event_key(str(events.uuid7())), parts, parts) for _ in range(8000))
    assert set(counts) == set(parts)
    assert max(counts.values()) < 1.15 * 2000 and min(counts.values()) > 0.85 * 2000


def test_the_contract_refuses_strings_a_sink_cannot_store():
    import pydantic

    def event(features: dict) -> bytes:
        return events.encode(
            events.build_event(
                event_id=events.uuid7(),
                event_time=events.utcnow(),
                model_name="m",
                model_version="1",
                features=features,
                prediction=1,
                scores=None,
                latency_ms=0.1,
            )
        )

    for bad in ("a\x00b", "\x07", "x\x1f"):
        try:
            events.InferenceEvent.model_validate_json(event({"f": bad}))
        except pydantic.ValidationError as exc:
            assert exc.errors()[0]["loc"][:2] == ("features", "f")
        else:
            raise AssertionError(f"{bad!r} accepted")
    assert events.InferenceEvent.model_validate_json(event({"f": "é\t中\n🙂"})).features["f"] == "é\t中\n🙂"
    schema = json.loads(events.SCHEMA_PATH.read_text())
    strings = [
        s for s in schema["properties"]["features"]["additionalProperties"]["anyOf"] if s["type"] == "string"
    ]
    assert strings == [{"type": "string", "pattern": events.TEXT_PATTERN}]
