"""The versioned model artifact: what training writes and the API and drift flow read.

    <models>/<name>/<version>/
        model.joblib       fitted scikit-learn estimator (predict / predict_proba)
        metadata.json      name, version, created_at, target, classes, feature schema, metrics
        reference.parquet  the training reference rows (features, target, prediction, score;
                           multiclass: one ``score_<class>`` column per class too)
        calibration.json   classifiers: CBPE's calibrators fitted on the reference
                           (``monitoring.cbpe.CBPE.calibration_json``)

Versions are positive integers as text ("1", "2", ...); "latest" resolves to the highest.
A version directory is written under a temporary name and renamed, so a reader never
sees half an artifact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from common.errors import ConfigError

FeatureType = Literal["number", "integer", "boolean", "category"]


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    type: FeatureType
    categories: tuple[str, ...] = ()  # known categories (seen in training); others are accepted

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.categories:
            d["categories"] = list(self.categories)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(d["name"], d["type"], tuple(d.get("categories", ())))


@dataclass
class ModelMetadata:
    name: str
    version: str
    target: str
    task: Literal["classification", "regression"]
    features: list[FeatureSpec]
    classes: list[Any] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    metrics: dict[str, float] = field(default_factory=dict)
    training_data: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "target": self.target,
            "task": self.task,
            "features": [f.to_json() for f in self.features],
            "classes": self.classes,
            "created_at": self.created_at,
            "metrics": self.metrics,
            "training_data": self.training_data,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelMetadata:
        return cls(
            name=d["name"],
            version=d["version"],
            target=d["target"],
            task=d["task"],
            features=[FeatureSpec.from_json(f) for f in d["features"]],
            classes=list(d.get("classes", [])),
            created_at=d.get("created_at", ""),
            metrics=dict(d.get("metrics", {})),
            training_data=d.get("training_data", ""),
        )


def versions(models_dir: Path, name: str) -> list[str]:
    root = models_dir / name
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found, key=int)


def resolve_dir(models_dir: Path, name: str, version: str = "latest") -> Path:
    """The artifact directory, or a ConfigError naming the settings to fix."""
    if version == "latest":
        found = versions(models_dir, name)
        if not found:
            raise ConfigError(
                f"no model '{name}' under {models_dir}: train one with `inferstream train`, "
                "or fix INFERSTREAM_MODEL_NAME / INFERSTREAM_DATA_DIR"
            )
        version = found[-1]
    path = models_dir / name / version
    if not (path / "metadata.json").is_file():
        raise ConfigError(
            f"model '{name}' version '{version}' not found under {models_dir}: fix INFERSTREAM_MODEL_VERSION"
        )
    return path


def read_metadata(path: Path) -> ModelMetadata:
    return ModelMetadata.from_json(orjson.loads((path / "metadata.json").read_bytes()))


def load(models_dir: Path, name: str, version: str = "latest") -> tuple[ModelMetadata, Any]:
    import joblib  # sklearn's own persistence; imported lazily (no I/O or heavy import at module load)

    path = resolve_dir(models_dir, name, version)
    return read_metadata(path), joblib.load(path / "model.joblib")


CALIBRATION = "calibration.json"


def read_calibration(path: Path) -> dict[str, Any] | None:
    """The stored CBPE calibration, or None (a regressor, or an artifact older than it)."""
    f = path / CALIBRATION
    return orjson.loads(f.read_bytes()) if f.is_file() else None


def next_version(models_dir: Path, name: str) -> str:
    found = versions(models_dir, name)
    return str(int(found[-1]) + 1) if found else "1"


def save(
    models_dir: Path,
    metadata: ModelMetadata,
    estimator: Any,
    reference: Any | None = None,
    calibration: dict[str, Any] | None = None,
) -> Path:
    """Write an artifact atomically; ``reference`` is a polars or pandas DataFrame."""
    import joblib

    final = models_dir / metadata.name / metadata.version
    if final.exists():
        raise ConfigError(f"{final} exists already; versions are immutable")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{metadata.version}.", dir=final.parent))
    try:
        joblib.dump(estimator, tmp / "model.joblib")
        (tmp / "metadata.json").write_bytes(orjson.dumps(metadata.to_json(), option=orjson.OPT_INDENT_2))
        if calibration is not None:
            (tmp / CALIBRATION).write_bytes(orjson.dumps(calibration, option=orjson.OPT_INDENT_2))
        if reference is not None:
            if hasattr(reference, "write_parquet"):
                reference.write_parquet(tmp / "reference.parquet")
            else:
                reference.to_parquet(tmp / "reference.parquet", index=False)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
