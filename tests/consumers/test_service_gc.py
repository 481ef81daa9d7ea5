"""The consumer process's cyclic GC threshold: ``consumers.service.tune_gc``, applied by
``inferstream consume`` from ``INFERSTREAM_GC_GEN0_THRESHOLD``."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consumers.service import tune_gc
from consumers.settings import ConsumerSettings


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*thresholds)
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_the_first_threshold_is_set_and_the_older_ones_kept(restore_gc: None) -> None:
    gc.disable()
    older = gc.get_threshold()[1:]
    tune_gc(12_345)
    assert gc.get_threshold() == (12_345, *older)
    assert gc.isenabled()


def test_zero_turns_the_cyclic_gc_off(restore_gc: None) -> None:
    tune_gc(0)
    assert not gc.isenabled()


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERSTREAM_GC_GEN0_THRESHOLD", raising=False)
    assert ConsumerSettings().gc_gen0_threshold == 100_000
    monkeypatch.setenv("INFERSTREAM_GC_GEN0_THRESHOLD", "5000")
    assert ConsumerSettings().gc_gen0_threshold == 5_000
