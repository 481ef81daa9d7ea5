"""Offsets never cross broker incarnations: the embedded in-memory broker restarted in
0.5 s, five times, under a live lander (a real ``inferstream consume lake`` process).

Each restart is a new life of the topic: offsets start at 0 again. Before the fix, a
lander flushed records fetched from the old broker and committed their offsets into
the new broker's group, or kept fetching at the old position: the new broker's first
offsets never landed, while ``kafka status`` showed no lag. Events the dead broker held
but the lander had not landed are gone with it (the documented loss of an in-memory
broker); every event the new broker holds must land, once.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from common.broker import EmbeddedBroker, free_port
from common.topics import ensure_topics
from inferstream.lakecheck import landing
from inferstream.procs import Child

from ..support import Stream, consumer_env, wait_for_log, wait_landed

TOPIC = "inference-events"
RESTARTS = 5


def _topics(bootstrap: str) -> None:
    asyncio.run(ensure_topics(bootstrap, {TOPIC: 4, f"{TOPIC}.dlq": 1}))


def _produce(bootstrap: str, n: int) -> list[str]:
    """``n`` events, each acknowledged by the broker (acks=all) before this returns."""
    stream = Stream(bootstrap, TOPIC, n, burst=n, pause_s=0)
    stream.run()
    assert stream.error is None, stream.error
    return stream.ids


@pytest.mark.slow
def test_five_fast_broker_restarts_every_event_the_new_broker_holds_lands(tmp_path, seed):
    rng = random.Random(seed)  # the kill moments; the seed is printed (the seed fixture)
    port = free_port()
    log = tmp_path / "tansu.log"
    broker = EmbeddedBroker(port=port, log_path=log).start()
    bootstrap = broker.bootstrap_servers
    _topics(bootstrap)
    env = consumer_env(
        bootstrap, TOPIC, tmp_path, "lake-restarts", INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE="false"
    )
    lander = Child("lander", ["consume", "lake"], env, tmp_path / "lander.log")
    produced: list[str] = []
    held_by_live_brokers: list[list[str]] = []
    rounds = []
    try:
        wait_for_log(lander, "assigned group=", timeout_s=90)
        for restart in range(RESTARTS + 1):
            # what this broker holds and keeps until the test kills it: all must land
            held = _produce(bootstrap, 600)
            produced += held
            held_by_live_brokers.append(held)
            result = wait_landed(tmp_path / "lake", held, [lander], timeout_s=60)
            rounds.append((restart, result.missing))
            assert not result.missing, (
                f"after {restart} restarts, {result.missing} of {len(held)} events the live broker "
                f"holds never landed; rounds so far {rounds}\n{lander.tail()}"
            )
            if restart == RESTARTS:
                break
            # a burst the lander is in the middle of when the broker dies (may be lost)
            produced += _produce(bootstrap, 600)
            time.sleep(rng.uniform(0.0, 0.4))  # the scenario: a seeded moment of that burst
            broker.kill()
            time.sleep(0.5)  # the scenario: the broker stays down a moment
            broker = EmbeddedBroker(port=port, log_path=log).start()
            _topics(bootstrap)
        everything = landing(tmp_path / "lake", produced)
    finally:
        lander.terminate()
        broker.stop()
    print(f"broker restarts: {RESTARTS}, rounds={rounds}, landed={everything.distinct} of {len(produced)}")
    # nothing landed twice, nothing landed that was not produced
    assert everything.rows == everything.distinct
    assert everything.distinct >= sum(len(h) for h in held_by_live_brokers)
