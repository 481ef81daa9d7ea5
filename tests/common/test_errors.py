"""Every exception the project defines derives from ``common.errors.InferstreamError``,
so one ``except InferstreamError`` (the CLI's) handles whatever inferstream raises on purpose."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from common.errors import InferstreamError

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("common", "monitoring", "api", "consumers", "warehouse", "flows", "inferstream")


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        names.append(pkg)
        for info in pkgutil.walk_packages([str(ROOT / pkg)], prefix=f"{pkg}."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return names


def _exceptions() -> dict[str, type[BaseException]]:
    found = {}
    for name in _modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    return found


def test_every_project_exception_derives_from_inferstream_error() -> None:
    found = _exceptions()
    assert "monitoring.errors.MonitoringError" in found  # the walk does reach the packages
    stray = sorted(n for n, cls in found.items() if not issubclass(cls, InferstreamError))
    assert stray == [], "derive these from InferstreamError"


def test_rerooted_exceptions_keep_their_builtin_base() -> None:
    """Callers that catch the builtin keep catching them."""
    from monitoring.errors import MissingColumnError, MonitoringError

    assert issubclass(MonitoringError, ValueError)
    assert issubclass(MissingColumnError, KeyError)
