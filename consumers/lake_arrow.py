"""The lake parser's fast read of a batch of a known shape: Arrow's JSON reader with
the shape's schema given and every other key an error.

polars reads NDJSON with a schema silently dropping keys the schema lacks, so its reads
are followed by a count of the keys in the bytes (consumers/lake_parse.py,
``_keys_all_known``): several passes over the batch, holding the GIL, about as long as
the read itself. Arrow's reader, told ``unexpected_field_behavior="error"``, refuses a
key it does not know at any depth, a key given twice and a value of another type, in
the same pass as the read and without the GIL. Any refusal sends the batch to the
slower inference, as a failed count did.

A shape qualifies when its schema can be given to Arrow as is. ``prediction`` is stored
as text whatever its JSON type; polars turns a JSON number into text itself, so the
Arrow read types it as the shape's first record has it and casts it to text after:
whole numbers, strings and booleans come out as polars writes them, but a fraction may
not (polars writes ``1e-07`` as ``0.0000001``, a cast as ``1e-7``), so a shape whose
prediction is a fraction keeps polars' read.
"""

from __future__ import annotations

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.json as paj

# a record longer than a block is refused. One thread a read: the lake sink runs reads in
# parallel already (consumers/lake.py, parse_threads), and Arrow's own threads cost more
# CPU than they save there (measured 8.4 against 6.2 us of CPU an event)
_READ = paj.ReadOptions(block_size=4 << 20, use_threads=False)
_PREDICTION_TYPES: dict[type, pa.DataType] = {int: pa.int64(), str: pa.large_string(), bool: pa.bool_()}


def arrow_schema(schema: pl.Schema, first: bytes) -> pa.Schema | None:
    """The Arrow schema to read a shape with (``schema`` inferred by polars from records
    whose first is ``first``), or None when the shape keeps polars' read."""
    try:
        arrow = pl.DataFrame(schema=schema).to_arrow(compat_level=pl.CompatLevel.oldest()).schema
    except pl.exceptions.PanicException:  # e.g. a key holding a NUL byte, which Arrow's C names cannot
        return None
    if "prediction" not in schema:
        return arrow
    try:
        value = orjson.loads(first).get("prediction")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    kind = _PREDICTION_TYPES.get(type(value))
    if kind is None:  # a fraction, null or nested: polars' own text for it
        return None
    i = arrow.get_field_index("prediction")
    return arrow.set(i, pa.field("prediction", kind))


def read(ndjson: bytes, rows: int, arrow: pa.Schema, schema: pl.Schema) -> pl.DataFrame | None:
    """``ndjson`` (``rows`` records) as a frame of ``schema``; None if a record does not
    fit the shape exactly (a key it lacks, a value of another type, another row count)."""
    options = paj.ParseOptions(explicit_schema=arrow, unexpected_field_behavior="error")
    try:
        table = paj.read_json(pa.py_buffer(ndjson), read_options=_READ, parse_options=options)
    except pa.ArrowInvalid:
        return None
    if table.num_rows != rows:
        return None  # a value held a line break between two objects
    try:
        df = pl.DataFrame(table)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
        return None
    if "prediction" in schema and df.schema["prediction"] != pl.String:
        df = df.with_columns(pl.col("prediction").cast(pl.String))
    return df if df.schema == schema else None
