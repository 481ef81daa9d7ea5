"""The drift monitor's open episodes, read back from the alerts topic at start: an
episode whose ``opened`` alert has no ``closed`` one after it is still open (see
consumers/drift.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from common.errors import DependencyUnavailable
from consumers.drift_episodes import CLOSED, OPENED, Key

log = logging.getLogger(__name__)


def episodes_from_alerts(values: Iterable[bytes]) -> dict[Key, str]:
    """Open episodes, from alert values in publish order (per key); others are ignored."""
    found: dict[Key, str] = {}
    for raw in values:
        try:
            a = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(a, dict) or a.get("kind") not in (OPENED, CLOSED):
            continue
        key = (str(a["model_name"]), str(a["model_version"]), str(a["column"]))
        if a["kind"] == OPENED:
            found[key] = str(a["episode_id"])
        else:
            found.pop(key, None)
    return found


async def recover_episodes(
    bootstrap: str,
    alerts_topic: str,
    read_back: int = 100_000,
    attempt_timeout_s: float = 30.0,
    attempts: int = 4,
) -> dict[Key, str]:
    """Open episodes according to the last ``read_back`` records of each partition of
    the alerts topic (the alerts of one key share a partition, so their order holds).

    Each attempt is bounded by ``attempt_timeout_s``: a topic created a moment ago can
    be missing from a broker's metadata, and a client call waiting on it would
    otherwise wait silently. A stalled attempt is logged and started again."""
    log.info("drift: reading open episodes back from %s", alerts_topic)
    for attempt in range(1, attempts + 1):
        try:
            values = await asyncio.wait_for(
                _read_alerts_back(bootstrap, alerts_topic, read_back), attempt_timeout_s
            )
        except (TimeoutError, KafkaError) as exc:
            log.warning(
                "drift: reading %s back failed (attempt %d of %d): %s",
                alerts_topic,
                attempt,
                attempts,
                exc.__class__.__name__,
            )
            if attempt < attempts:
                await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
            continue
        return episodes_from_alerts(values)
    raise DependencyUnavailable(f"could not read {alerts_topic} back in {attempts} attempts")


async def _read_alerts_back(bootstrap: str, alerts_topic: str, read_back: int) -> list[Any]:
    # subscribed first, only so that start() waits for the topic's metadata (partitions)
    reader = AIOKafkaConsumer(
        alerts_topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=10_000,
    )
    values: list[Any] = []
    try:
        await reader.start()
        parts = sorted(reader.partitions_for_topic(alerts_topic) or ())
        tps = [TopicPartition(alerts_topic, p) for p in parts]
        reader.unsubscribe()
        if not tps:
            return values
        reader.assign(tps)
        end = await reader.end_offsets(tps)
        begin = await reader.beginning_offsets(tps)
        for tp in tps:
            reader.seek(tp, max(begin[tp], end[tp] - read_back))
        # position(), not the last record's offset: transaction markers take offsets too
        todo = {tp for tp in tps if await reader.position(tp) < end[tp]}
        while todo:
            batch = await reader.getmany(*todo, timeout_ms=500)
            for msgs in batch.values():
                values.extend(m.value for m in msgs if m.value)
            todo = {tp for tp in todo if await reader.position(tp) < end[tp]}
    finally:
        await reader.stop()
    return values
