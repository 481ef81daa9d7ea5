"""The lake parser's Arrow read of a known shape (consumers/lake_arrow.py) gives the
frame polars' read gives, and refuses every record polars' read plus the key count
would have refused, so those batches still go to inference."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import polars as pl
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from polars.testing import assert_frame_equal

from common import events
from consumers import lake_arrow
from consumers.lake_parse import _FIXED_SCHEMA, EventParser

TP = TopicPartition("inference-events", 0)


def _value(i: int, prediction: object, **features: object) -> bytes:
    ev = events.build_event(
        event_id=events.uuid7(),
        event_time=datetime(2026, 3, 1, 9, i % 60, tzinfo=UTC),
        model_name="m",
        model_version="1",
        features={"x": i * 0.5, "n": i, "band": "ab"[i % 2], "flag": i % 3 == 0, **features},
        prediction=prediction,
        scores={"0": 0.25, "1": 0.75},
        latency_ms=0.1 + i,
    )
    return events.encode(ev)


def _polars(values: list[bytes], schema: pl.Schema) -> pl.DataFrame:
    return pl.read_ndjson(b"\n".join(values), schema=schema)


def _schema(values: list[bytes]) -> pl.Schema:
    return pl.read_ndjson(b"\n".join(values), infer_schema_length=None, schema_overrides=_FIXED_SCHEMA).schema


@pytest.mark.parametrize(
    "predictions", [[0, 1, 7], ["cat", "dog", ""], [True, False, True], [12345678901234567, -3, 0]]
)
def test_the_arrow_read_gives_polars_frame(predictions):
    first = [_value(i, predictions[i % 3]) for i in range(30)]
    schema = _schema(first)
    arrow = lake_arrow.arrow_schema(schema, first[0])
    assert arrow is not None
    values = [_value(i, predictions[i % 3]) for i in range(30, 530)]
    got = lake_arrow.read(b"\n".join(values), len(values), arrow, schema)
    assert got is not None
    assert_frame_equal(got, _polars(values, schema))


def test_a_fraction_prediction_keeps_polars_read():
    """polars writes 1e-07 as text 0.0000001, a cast writes 1e-7: stored values would change."""
    values = [_value(i, 1e-7 * i) for i in range(10)]
    assert lake_arrow.arrow_schema(_schema(values), values[0]) is None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d["features"].update(extra=1.0), id="a key the shape lacks, nested"),
        pytest.param(lambda d: d.update(extra="x"), id="a key the shape lacks, on top"),
        pytest.param(lambda d: d["features"].update(x="text"), id="a number turned text"),
        pytest.param(lambda d: d.update(prediction="cat"), id="the prediction's type"),
        pytest.param(lambda d: d["features"].update(n=2.5), id="a whole number turned fraction"),
    ],
)
def test_a_record_off_the_shape_is_refused(change):
    values = [_value(i, 1) for i in range(50)]
    schema = _schema(values)
    arrow = lake_arrow.arrow_schema(schema, values[0])
    assert arrow is not None
    doc = orjson.loads(values[17])
    change(doc)
    values[17] = orjson.dumps(doc)
    assert lake_arrow.read(b"\n".join(values), len(values), arrow, schema) is None


def test_a_key_given_twice_or_a_line_break_is_refused():
    values = [_value(i, 1) for i in range(5)]
    schema = _schema(values)
    arrow = lake_arrow.arrow_schema(schema, values[0])
    assert arrow is not None
    assert values[2].startswith(b'{"schema_version"')
    doubled = values[2].replace(b'{"schema_version"', b'{"status":"ok","schema_version"', 1)
    twice = [*values[:2], doubled, *values[3:]]
    assert lake_arrow.read(b"\n".join(twice), 5, arrow, schema) is None
    two_in_one = values[:2] + [values[2] + b"\n" + values[3]] + values[4:]
    assert lake_arrow.read(b"\n".join(two_in_one), 4, arrow, schema) is None


def test_the_parser_keeps_a_renamed_feature_through_the_arrow_read():
    """End to end through EventParser: the second batch has the cached shape's key count
    and quote count but one renamed feature; it must come out with the new key."""
    parser = EventParser()

    def recs(values: list[bytes], start: int) -> list[ConsumerRecord]:
        return [
            ConsumerRecord(TP.topic, 0, start + i, 0, 0, None, v, None, 0, 0, ())
            for i, v in enumerate(values)
        ]

    first = parser.frame(recs([_value(i, 1) for i in range(40)], 0), [])
    assert first is not None and first.height == 40
    assert parser._arrow  # the shape qualified for the Arrow read
    batch = [_value(i, 1) for i in range(40, 80)]
    batch[5] = batch[5].replace(b'"band"', b'"bend"', 1)
    dead: list = []
    df = parser.frame(recs(batch, 40), dead)
    assert not dead and df is not None and df.height == 40
    features = df["features"].struct.unnest()
    assert features["bend"].drop_nulls().to_list() == [orjson.loads(batch[5])["features"]["bend"]]
    assert features["band"].null_count() == 1


def test_a_shape_arrow_cannot_name_keeps_polars_read():
    """A key holding a NUL byte: polars panics turning it into an Arrow schema (found by
    test_poison_values); the shape keeps polars' read instead of stopping the lander."""
    values = [_value(i, 1, **{"a\x00b": 1.0}) for i in range(5)]
    assert lake_arrow.arrow_schema(_schema(values), values[0]) is None
