"""Real demo data that a package ships: the synthetic car-loan dataset inside the
``nannyml`` wheel, read straight out of the wheel file (nannyml is never installed or
imported; its dependency pins would fight ours). The wheel comes from PyPI through pip,
once, into ``<data>/cache/wheels``.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import polars as pl

from common.artifact import FeatureSpec
from common.errors import DependencyUnavailable

NANNYML_VERSION = "0.13.1"
_MEMBER = "nannyml/datasets/data/synthetic_car_loan_{part}.csv"

CAR_LOAN_FEATURES = [
    FeatureSpec("car_value", "number"),
    FeatureSpec("salary_range", "category"),
    FeatureSpec("debt_to_income_ratio", "number"),
    FeatureSpec("loan_length", "number"),
    FeatureSpec("repaid_loan_on_prev_car", "boolean"),
    FeatureSpec("size_of_downpayment", "category"),
    FeatureSpec("driver_tenure", "number"),
]
CAR_LOAN_TARGET = "repaid"


def nannyml_wheel(cache_dir: Path) -> Path:
    wheels = cache_dir / "wheels"
    found = sorted(wheels.glob(f"nannyml-{NANNYML_VERSION}-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        f"nannyml=={NANNYML_VERSION}",
        "-d",
        str(wheels),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(wheels.glob(f"nannyml-{NANNYML_VERSION}-*.whl"))
    if result.returncode != 0 or not found:
        raise DependencyUnavailable(
            f"could not fetch the nannyml {NANNYML_VERSION} wheel from the package index "
            f"(pip said: {result.stderr.strip()[-300:]}); put the wheel in {wheels} by hand"
        )
    return found[0]


def car_loan(cache_dir: Path, part: str = "reference") -> pl.DataFrame:
    """The car-loan ``reference`` (50k rows, with target) or ``analysis`` part (50k rows;
    its target joined from ``analysis_target``)."""
    with zipfile.ZipFile(nannyml_wheel(cache_dir)) as whl:
        df = pl.read_csv(io.BytesIO(whl.read(_MEMBER.format(part=part))))
        if part == "analysis":
            target = pl.read_csv(io.BytesIO(whl.read(_MEMBER.format(part="analysis_target"))))
            df = df.join(target, on="id", how="left")
    return df.with_columns(
        pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_zone="UTC"),
        pl.col("repaid_loan_on_prev_car").cast(pl.Boolean),
        pl.col(CAR_LOAN_TARGET).cast(pl.Int64),
    )
