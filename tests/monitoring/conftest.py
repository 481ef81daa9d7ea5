"""The NannyML wheel's demo data, fetched once per machine (pip download, no install)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import polars as pl
import pytest

from inferstream.datasets import nannyml_wheel


@pytest.fixture(scope="session")
def nannyml_data() -> zipfile.ZipFile:
    cache = Path(os.environ.get("INFERSTREAM_TEST_CACHE", Path.home() / ".cache" / "inferstream-tests"))
    return zipfile.ZipFile(nannyml_wheel(cache))


def read_csv(whl: zipfile.ZipFile, name: str) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(whl.read(f"nannyml/datasets/data/{name}.csv")))
