"""The API in-process (TestClient) against the real broker: validation and events."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from common.events import InferenceEvent

from ..support import read_values


@pytest.fixture
def settings(trained_model, kafka_bootstrap, topic) -> ApiSettings:
    return ApiSettings(
        data_dir=trained_model.data_dir,
        kafka_bootstrap_servers=kafka_bootstrap,
        model_name=trained_model.name,
        model_version=trained_model.version,
        events_topic=topic,
        linger_ms=5,
        auth_enabled=False,
    )


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def test_predictions_become_valid_events_in_kafka(client, trained_model, kafka_bootstrap, topic):
    ids = []
    for row in trained_model.rows[:25]:
        r = client.post("/v1/predict", json={"features": row})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_name"] == trained_model.name
        assert body["model_version"] == trained_model.version
        assert body["prediction"] in (0, 1)
        assert abs(sum(body["scores"].values()) - 1.0) < 1e-9
        ids.append(body["prediction_id"])
    raw = read_values(kafka_bootstrap, topic, 25)
    events = [InferenceEvent.model_validate_json(v) for v in raw]
    assert sorted(str(e.event_id) for e in events) == sorted(ids)
    by_id = {str(e.event_id): e for e in events}
    first = by_id[ids[0]]
    assert first.features == trained_model.rows[0]
    assert first.status == "ok" and first.latency_ms > 0
    # time inside the API covers the model's time plus parsing, validation and routing
    assert all(e.http_latency_ms is not None and e.http_latency_ms > e.latency_ms for e in events)
    assert first.client_id is None  # authentication is off in this fixture


def _bad(row: dict, **changes) -> dict:
    out = dict(row)
    for k, v in changes.items():
        if v is KeyError:
            out.pop(k)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"mean_radius": KeyError}, "mean_radius", "missing"),
        ({"not_a_feature": 1.0}, "not_a_feature", "extra_forbidden"),
        ({"mean_radius": "12.5"}, "mean_radius", "float_type"),
        ({"mean_radius": True}, "mean_radius", "float_type"),
        ({"high_texture": 1}, "high_texture", "bool_type"),
        ({"size_band": 3}, "size_band", "string_type"),
        ({"size_band": ""}, "size_band", "string_too_short"),
    ],
)
def test_invalid_features_get_422_naming_the_field(client, trained_model, change, field, kind):
    r = client.post("/v1/predict", json={"features": _bad(trained_model.rows[0], **change)})
    assert r.status_code == 422
    errors = r.json()["detail"]
    assert any(e["loc"][-1] == field and e["type"] == kind for e in errors), errors


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_get_422_not_500(client, trained_model, literal):
    body = json.dumps({"features": trained_model.rows[0]}).replace(
        f'"mean_radius": {trained_model.rows[0]["mean_radius"]}', f'"mean_radius": {literal}'
    )
    assert literal in body
    r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == "mean_radius"


def test_malformed_json_gets_a_clear_4xx(client):
    r = client.post("/v1/predict", content=b'{"features": {', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"


def test_models_health_and_readiness(client, trained_model):
    models = client.get("/v1/models").json()
    assert models[0]["name"] == trained_model.name and models[0]["version"] == trained_model.version
    assert {f["name"] for f in models[0]["features"]} == set(trained_model.rows[0])
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"


def test_metrics_count_requests_and_events(client, trained_model):
    for row in trained_model.rows[:3]:
        assert client.post("/v1/predict", json={"features": row}).status_code == 200
    text = client.get("/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    mv = (("model", trained_model.name), ("version", trained_model.version))
    route = (("route", "/v1/predict"), ("status", "200"))
    assert samples[("inferstream_requests_total", tuple(sorted(mv + route)))] == 3.0
    assert samples[("inferstream_request_seconds_count", tuple(sorted(mv + route)))] == 3.0
    assert samples[("inferstream_model_seconds_count", mv)] == 3.0
    assert "inferstream_events_enqueued_total 3.0" in text


def test_events_name_the_client_when_authentication_is_on(settings, trained_model, kafka_bootstrap, topic):
    from api.auth import ApiKeySpec, hash_key

    keyed = settings.model_copy(
        update={"auth_enabled": True, "api_keys": [ApiKeySpec(name="team-a", sha256=hash_key("key-a"))]}
    )
    with TestClient(create_app(keyed)) as c:
        r = c.post("/v1/predict", json={"features": trained_model.rows[0]}, headers={"X-API-Key": "key-a"})
        assert r.status_code == 200, r.text
    (raw,) = read_values(kafka_bootstrap, topic, 1)
    event = InferenceEvent.model_validate_json(raw)
    assert str(event.event_id) == r.json()["prediction_id"]
    assert event.client_id == "team-a"


def test_strings_a_sink_cannot_store_get_a_422_naming_the_field(
    client, trained_model, kafka_bootstrap, topic
):
    """The campaign's ``"salary_range": "a\\u0000b"`` (a category of its model; here the
    test model's ``size_band``) stopped the audit consumer: PostgreSQL cannot hold NUL."""
    row = trained_model.rows[0]
    body = json.dumps({"features": {**row, "size_band": "PLACEHOLDER"}})
    refused = {
        "NUL": r"a\u0000b",
        "other C0 control": r"a\u001bb",
        "lone surrogate": r"a\ud800b",
    }
    for name, escaped in refused.items():
        r = client.post(
            "/v1/predict",
            content=body.replace("PLACEHOLDER", escaped),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, (name, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", "features", "size_band"], (name, r.text)
    batch = client.post("/v1/predict/batch", json={"items": [{"features": {**row, "size_band": "a\u0000b"}}]})
    assert batch.status_code == 422 and batch.json()["detail"][0]["loc"] == [
        "body",
        "items",
        0,
        "features",
        "size_band",
    ]
    label = client.post(
        "/v1/feedback", json={"prediction_id": "01900000-0000-7000-8000-000000000000", "label": "a\u0000b"}
    )
    assert label.status_code == 422 and label.json()["detail"][0]["loc"][:2] == ["body", "label"], label.text
    # valid Unicode, tabs and newlines included, is served and published unchanged
    fine = "é 中文 🙂\tline\nbreak"
    ok = client.post("/v1/predict", json={"features": {**row, "size_band": fine}})
    assert ok.status_code == 200, ok.text
    (raw,) = read_values(kafka_bootstrap, topic, 1)
    event = InferenceEvent.model_validate_json(raw)
    assert str(event.event_id) == ok.json()["prediction_id"] and event.features["size_band"] == fine


def test_api_process_logs_its_address_model_and_version_at_start(
    trained_model, kafka_bootstrap, topic, tmp_path
):
    from common.broker import free_port
    from inferstream.procs import Child, wait_ready

    from ..support import api_env, wait_for_log

    port = free_port()
    child = Child("api", ["api"], api_env(trained_model, kafka_bootstrap, topic, port), tmp_path / "api.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", child)
        wait_for_log(
            child,
            f"serving model {trained_model.name} version {trained_model.version} on http://127.0.0.1:{port}; "
            f"events to topic {topic} via KAFKA_BOOTSTRAP_SERVERS={kafka_bootstrap}",
            timeout_s=5,
        )
    finally:
        child.terminate()


@pytest.mark.slow  # waits out eight back-off attempts: ~12 s (aiokafka) to ~21 s (confluent)
@pytest.mark.parametrize("client", ["aiokafka", "confluent"])
def test_api_process_backs_off_while_kafka_is_unreachable_and_names_the_setting_once(
    trained_model, tmp_path, client
):
    """A real API process pointed at a closed port: one warning naming the setting, then
    warnings after 2, 4, 8 failed attempts only, attempts spaced out exponentially, no
    ERROR (the Kafka clients' per-attempt ones included) and no traceback."""
    import re
    import time
    from datetime import UTC, datetime

    from common.broker import free_port
    from inferstream.procs import Child, wait_ready

    from ..support import api_env, wait_for_log

    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    port = free_port()
    env = {
        **api_env(trained_model, closed, "events", port),
        "INFERSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
        "INFERSTREAM_PROBE_INTERVAL_S": "0.1",
        "INFERSTREAM_PROBE_MAX_INTERVAL_S": "1",
        "INFERSTREAM_KAFKA_CLIENT": client,
        # librdkafka's probe waits out its metadata timeout, min(this, 5 s), per attempt
        # (8 x 5 s with the default); aiokafka's fails at once on the closed port
        "INFERSTREAM_SEND_TIMEOUT_S": "1",
    }
    child = Child("api", ["api"], env, tmp_path / "api.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", child)
        wait_for_log(child, f"Kafka at {closed} unreachable", timeout_s=10)
        # attempts at about 0, .1, .3, .7, 1.5, 2.5, 3.5 s: the 8th after ~4.5 s
        # (with a fixed 0.1 s interval it would come after 0.7 s, the 16th after 1.5 s)
        # (librdkafka's probe adds its 1 s metadata timeout to each: ~12 s)
        wait_for_log(
            child, "still unreachable after 8 attempts", timeout_s=30 if client == "aiokafka" else 120
        )
        time.sleep(2)  # the scenario: 2 s more of back-off, in which no further warning is due
    finally:
        child.terminate()
    lines = child.log_path.read_text().splitlines()
    assert not [ln for ln in lines if " ERROR " in ln or "Traceback" in ln], lines
    # nothing beside the log (librdkafka printed "%3|...|FAIL|..." to stderr per attempt)
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \d+ ", ln) for ln in lines), lines
    warnings = [ln for ln in lines if " WARNING " in ln]
    assert len(warnings) == 4, warnings  # first failure, then after 2, 4 and 8 attempts
    assert "(is KAFKA_BOOTSTRAP_SERVERS right?)" in warnings[0]
    assert sum("KAFKA_BOOTSTRAP_SERVERS" in ln for ln in warnings) == 1
    assert [re.search(r"after (\d+) attempts", ln).group(1) for ln in warnings[1:]] == ["2", "4", "8"]

    def at(line: str) -> float:
        # local time, as logged: only differences matter
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp()

    assert at(warnings[3]) - at(warnings[0]) > 3.0, warnings
