"""Explicit topic creation, before any producer or consumer connects.

Tansu auto-creates a topic with 4 partitions on the first metadata request that names
it, and forgets every topic on restart; real Kafka may have auto-creation off. So
every entry point that needs a topic creates it first, with its partition count.

Replication follows the cluster: unless the caller names a factor, a topic gets
``min(3, live brokers)`` replicas and, with three or more, ``min.insync.replicas=2``
(so ``acks=all`` survives one node down and refuses writes with two down), as
``deployments/`` configures production topics.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from common.errors import DependencyUnavailable

log = logging.getLogger(__name__)


async def start_admin(bootstrap_servers: str, timeout_s: float = 20.0) -> AIOKafkaAdminClient:
    """A started admin client (the caller closes it), or DependencyUnavailable naming the
    setting to fix."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaConnectionError, TimeoutError) as exc:
        await admin.close()
        raise DependencyUnavailable(
            f"cannot reach Kafka at {bootstrap_servers}: check KAFKA_BOOTSTRAP_SERVERS"
        ) from exc
    return admin


def topic_configs(replication_factor: int) -> dict[str, str]:
    """Per-topic settings for a replication factor: ``min.insync.replicas`` is one less
    than the replicas, at most 2 (Kafka's usual RF 3 / min ISR 2)."""
    if replication_factor < 2:
        return {}
    return {"min.insync.replicas": str(min(2, replication_factor - 1))}


async def ensure_topics(
    bootstrap_servers: str,
    partitions: dict[str, int],
    *,
    replication_factor: int | None = None,
    configs: dict[str, str] | None = None,
    timeout_s: float = 20.0,
) -> None:
    """Create each topic that does not exist yet. Existing topics are left as they are.
    ``replication_factor=None`` means ``min(3, live brokers)``."""
    admin = await start_admin(bootstrap_servers, timeout_s)
    try:
        if replication_factor is None:
            brokers = (await admin.describe_cluster())["brokers"]
            replication_factor = max(1, min(3, len(brokers)))
        extra = {**topic_configs(replication_factor), **(configs or {})}
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=t,
                num_partitions=n,
                replication_factor=replication_factor,
                topic_configs=extra or None,
            )
            for t, n in partitions.items()
            if t not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won; the topic exists, which is all we need
            except KafkaError as exc:
                raise DependencyUnavailable(f"creating topics {missing} failed: {exc}") from exc
            log.info("created topics %s", {t.name: t.num_partitions for t in missing})
    finally:
        await admin.close()
