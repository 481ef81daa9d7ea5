"""schemathesis over the OpenAPI schema of a running API process (auth on, one key):
no 5xx, every response conforms to the schema, undocumented statuses fail."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from api.auth import hash_key
from common.broker import free_port
from common.topics import ensure_topics
from inferstream.procs import Child, wait_ready

KEY = "schemathesis-key"


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, trained_model, kafka_bootstrap):
    tmp = tmp_path_factory.mktemp("schemathesis")
    topic = f"t-schemathesis-{free_port()}"
    asyncio.run(ensure_topics(kafka_bootstrap, {topic: 4, topic + "-fb": 4}))
    port = free_port()
    keys = f'[{{"name": "st", "sha256": "{hash_key(KEY)}", "roles": ["predict", "feedback"]}}]'
    env = {
        "INFERSTREAM_DATA_DIR": str(trained_model.data_dir),
        "INFERSTREAM_SPOOL_DIR": str(tmp / "spool"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "INFERSTREAM_PORT": str(port),
        "INFERSTREAM_MODEL_NAME": trained_model.name,
        "INFERSTREAM_MODEL_VERSION": trained_model.version,
        "INFERSTREAM_EVENTS_TOPIC": topic,
        "INFERSTREAM_FEEDBACK_TOPIC": topic + "-fb",
        "INFERSTREAM_API_KEYS": keys,
        "INFERSTREAM_BATCH_MAX_ITEMS": "3",
    }
    api = Child("api", ["api"], env, tmp / "api.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", api)
        # the schema needs a key like the routes it describes (INFERSTREAM_DOCS_ACCESS=key)
        yield schemathesis.openapi.from_url(
            f"http://127.0.0.1:{port}/openapi.json", headers={"X-API-Key": KEY}
        )
    finally:
        api.terminate()
        assert "Traceback" not in api.tail(200), api.tail(200)


OPERATIONS = [
    ("POST", "/v1/predict"),
    ("POST", "/v1/predict/batch"),
    ("POST", "/v1/feedback"),
    ("GET", "/v1/models"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]


def test_every_operation_is_covered(api_schema):
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# negative data (schema-invalid bodies) exists only for operations that take a body
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS]
CASES += [(m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST"]


# Hypothesis blames a strategy when the global `random` state moves while it draws, but
# other threads of this test process move it too (in CI, once; the likely source: the
# Prefect harness's background threads in the same worker, whose jittered intervals,
# prefect.utilities.math, draw from `random`), and the error did not reproduce on
# Hypothesis' own retry (FlakyFailure). The cases are still drawn
# from Hypothesis' own randomness; only the misattribution is ignored.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=lambda v: str(v))
def test_api_conforms_to_its_openapi_schema(api_schema, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        case.call_and_validate(headers={"X-API-Key": KEY})

    run()
