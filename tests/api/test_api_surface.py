"""The API surface beyond single predictions, in-process against the real broker: body
limit, batch, feedback, sampling, size guard, synthetic flag, PII, auth, model errors."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import hash_key
from api.deps import get_model
from api.model import ServedModel
from api.settings import ApiSettings
from api.shaping import keep
from common import artifact
from common.errors import ConfigError
from common.events import FeedbackEvent, InferenceEvent
from common.topics import ensure_topics

from ..support import promtool, read_values


def _settings(trained_model, kafka_bootstrap, topic, **extra) -> ApiSettings:
    base = dict(
        data_dir=trained_model.data_dir,
        kafka_bootstrap_servers=kafka_bootstrap,
        model_name=trained_model.name,
        model_version=trained_model.version,
        events_topic=topic,
        linger_ms=5,
        auth_enabled=False,
    )
    return ApiSettings(**{**base, **extra})


def _events(kafka_bootstrap: str, topic: str, n: int, timeout_s: float = 15.0) -> list[InferenceEvent]:
    return [InferenceEvent.model_validate_json(v) for v in read_values(kafka_bootstrap, topic, n, timeout_s)]


@pytest.fixture
def client(trained_model, kafka_bootstrap, topic):
    with TestClient(create_app(_settings(trained_model, kafka_bootstrap, topic, max_body_bytes=20_000))) as c:
        yield c


def test_body_over_the_limit_gets_413_by_length_and_chunked(client, trained_model):
    big = b'{"features": {"x": "' + b"a" * 30_000 + b'"}}'
    r = client.post("/v1/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():
        for _ in range(30):
            yield b"a" * 1000

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    # a chunked body under the limit is served
    ok = client.post(
        "/v1/predict",
        content=iter([b'{"features": ', json.dumps(trained_model.rows[0]).encode(), b"}"]),
        headers={"content-type": "application/json"},
    )
    assert ok.status_code == 200, ok.text


def test_batch_predicts_in_order_publishes_each_and_is_bounded(trained_model, kafka_bootstrap, topic):
    s = _settings(trained_model, kafka_bootstrap, topic, batch_max_items=5)
    with TestClient(create_app(s)) as c:
        items = [{"features": r} for r in trained_model.rows[:5]]
        r = c.post("/v1/predict/batch", json={"items": items})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["status"] for p in preds] == ["ok"] * 5
        singles = [c.post("/v1/predict", json=i).json()["prediction"] for i in items]
        assert [p["prediction"] for p in preds] == singles
        too_many = c.post("/v1/predict/batch", json={"items": items + items[:1]})
        assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"][-1] == "items"
        bad = c.post(
            "/v1/predict/batch",
            json={"items": [items[0], {"features": {**trained_model.rows[0], "mean_radius": "x"}}]},
        )
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:3] == ["body", "items", 1]
    ids = {str(e.event_id) for e in _events(kafka_bootstrap, topic, 10)}
    assert {p["prediction_id"] for p in preds} <= ids


def test_feedback_is_published_to_its_topic(trained_model, kafka_bootstrap, topic):
    fb_topic = topic + "-feedback"
    asyncio.run(ensure_topics(kafka_bootstrap, {fb_topic: 4}))
    with TestClient(
        create_app(_settings(trained_model, kafka_bootstrap, topic, feedback_topic=fb_topic))
    ) as c:
        pid = c.post("/v1/predict", json={"features": trained_model.rows[0]}).json()["prediction_id"]
        r = c.post("/v1/feedback", json={"prediction_id": pid, "label": 1})
        assert r.status_code == 202, r.text
        assert c.post("/v1/feedback", json={"prediction_id": "nope", "label": 1}).status_code == 422
        assert c.post("/v1/feedback", json={"prediction_id": pid}).json()["detail"][0]["loc"][-1] == "label"
    (raw,) = read_values(kafka_bootstrap, fb_topic, 1)
    fb = FeedbackEvent.model_validate_json(raw)
    assert str(fb.prediction_id) == pid and fb.label == 1 and str(fb.feedback_id) == r.json()["feedback_id"]


def test_sampling_by_event_id_is_counted(trained_model, kafka_bootstrap, topic):
    s = _settings(trained_model, kafka_bootstrap, topic, sample_rates={trained_model.name: 0.5})
    with TestClient(create_app(s)) as c:
        for row in trained_model.rows[:200]:
            assert c.post("/v1/predict", json={"features": row}).status_code == 200
        text = c.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("inferstream_events_sampled_out_total"))
    sampled_out = int(float(line.split()[-1]))
    kept = _events(kafka_bootstrap, topic, 200 - sampled_out)
    assert 60 < sampled_out < 140  # ~half, decided by the id's hash
    assert len(kept) == 200 - sampled_out
    assert all(keep(e.event_id, 0.5) for e in kept)
    assert not keep(uuid.UUID(int=0), 0.0) and keep(uuid.UUID(int=0), 1.0)


def test_oversized_events_carry_a_digest_instead_of_features(trained_model, kafka_bootstrap, topic):
    s = _settings(trained_model, kafka_bootstrap, topic, max_event_bytes=1024)
    with TestClient(create_app(s)) as c:
        r = c.post("/v1/predict", json={"features": trained_model.rows[0]})
        assert r.status_code == 200
        assert "inferstream_events_oversized_total 1.0" in c.get("/metrics").text
    (e,) = _events(kafka_bootstrap, topic, 1)
    assert set(e.features) == {"_digest", "_oversized_bytes"}
    assert str(e.features["_digest"]).startswith("sha256:") and int(e.features["_oversized_bytes"]) > 1024
    assert e.prediction == r.json()["prediction"]


def test_synthetic_header_and_pii_hmac(trained_model, kafka_bootstrap, topic):
    s = _settings(trained_model, kafka_bootstrap, topic, pii_fields=["size_band"], pii_hmac_key="k3y")
    row = trained_model.rows[0]
    with TestClient(create_app(s)) as c:
        a = c.post("/v1/predict", json={"features": row}, headers={"X-Inferstream-Synthetic": "true"}).json()
        b = c.post("/v1/predict", json={"features": row}).json()
    by_id = {str(e.event_id): e for e in _events(kafka_bootstrap, topic, 2)}
    ea, eb = by_id[a["prediction_id"]], by_id[b["prediction_id"]]
    assert ea.synthetic is True and eb.synthetic is False
    token = "hmac-sha256:" + hmac.new(b"k3y", row["size_band"].encode(), hashlib.sha256).hexdigest()
    assert ea.features["size_band"] == eb.features["size_band"] == token  # joinable, not readable
    assert ea.features["mean_radius"] == row["mean_radius"]
    with pytest.raises(ConfigError, match="INFERSTREAM_PII_HMAC_KEY"):
        create_app(_settings(trained_model, kafka_bootstrap, topic, pii_fields=["size_band"]))


def test_api_keys_401_403_429_and_synthetic_role(trained_model, kafka_bootstrap, topic):
    keys = [
        {"name": "app", "sha256": hash_key("good"), "roles": ["predict"]},
        {"name": "prober", "sha256": hash_key("probe"), "roles": ["predict", "synthetic"]},
    ]
    s = _settings(
        trained_model, kafka_bootstrap, topic, auth_enabled=True, api_keys=keys, rate_limit_per_key=5
    )
    body = {"features": trained_model.rows[0]}
    with TestClient(create_app(s)) as c:
        assert c.post("/v1/predict", json=body).status_code == 401
        assert c.post("/v1/predict", json=body, headers={"X-API-Key": "bad"}).status_code == 401
        ok = c.post("/v1/predict", json=body, headers={"Authorization": "Bearer good"})
        assert ok.status_code == 200
        fb = {"prediction_id": ok.json()["prediction_id"], "label": 0}
        denied = c.post("/v1/feedback", json=fb, headers={"X-API-Key": "good"})
        assert denied.status_code == 403 and "feedback" in denied.json()["detail"]
        probe = c.post("/v1/predict", json=body, headers={"X-API-Key": "probe"}).json()
        codes = [
            c.post("/v1/predict", json=body, headers={"X-API-Key": "good"}).status_code for _ in range(10)
        ]
        assert 429 in codes and codes[0] == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    events = {str(e.event_id): e for e in _events(kafka_bootstrap, topic, 2 + codes.count(200))}
    assert events[probe["prediction_id"]].synthetic is True
    assert events[ok.json()["prediction_id"]].synthetic is False
    with pytest.raises(ConfigError, match="INFERSTREAM_AUTH_ENABLED=false"):
        create_app(_settings(trained_model, kafka_bootstrap, topic, auth_enabled=True))


def _auth_settings(trained_model, kafka_bootstrap, topic, **extra) -> ApiSettings:
    keys = [
        {"name": "app", "sha256": hash_key("good"), "roles": ["predict"]},
        {"name": "scraper", "sha256": hash_key("scrape"), "roles": ["metrics"]},
    ]
    return _settings(trained_model, kafka_bootstrap, topic, auth_enabled=True, api_keys=keys, **extra)


def test_a_batch_costs_a_token_per_prediction_and_429_says_when_to_retry(
    trained_model, kafka_bootstrap, topic
):
    s = _auth_settings(trained_model, kafka_bootstrap, topic, rate_limit_per_key=2, batch_max_items=10)
    key = {"X-API-Key": "good"}
    items = [{"features": r} for r in trained_model.rows[:10]]
    with TestClient(create_app(s)) as c:
        r = c.post("/v1/predict/batch", json={"items": items}, headers=key)
        assert r.status_code == 200, r.text
        # 10 predictions against a bucket of 2: 8 tokens owed, refilled at 2/s
        late = c.post("/v1/predict", json=items[0], headers=key)
        assert late.status_code == 429, late.text
        wait = int(late.headers["Retry-After"])
        assert 4 <= wait <= 5, wait
        assert f"retry in {wait}s" in late.json()["detail"]
        # the other key has its own bucket
        assert c.get("/metrics", headers={"X-API-Key": "scrape"}).status_code == 200


def test_the_key_is_checked_before_the_body_and_guards_metrics_and_docs(
    trained_model, kafka_bootstrap, topic
):
    malformed = {"content": b'{"features": {', "headers": {"content-type": "application/json"}}
    with TestClient(create_app(_auth_settings(trained_model, kafka_bootstrap, topic))) as c:
        for headers in ({}, {"X-API-Key": "bad"}, {"Authorization": "Bearer bad"}):
            r = c.post(
                "/v1/predict", content=malformed["content"], headers={**malformed["headers"], **headers}
            )
            assert r.status_code == 401, (headers, r.status_code, r.text)
            assert r.headers["WWW-Authenticate"] == "Bearer"
        wrong_role = c.post(
            "/v1/predict",
            content=malformed["content"],
            headers={**malformed["headers"], "X-API-Key": "scrape"},
        )
        assert wrong_role.status_code == 403
        # with a good key the body is parsed: the malformed JSON is now the error
        r = c.post(
            "/v1/predict", content=malformed["content"], headers={**malformed["headers"], "X-API-Key": "good"}
        )
        assert r.status_code == 422
        # metrics: a key with the metrics role; schema: a predict key; the HTML pages are off
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": "good"}).status_code == 403
        assert "inferstream_requests_total" in c.get("/metrics", headers={"X-API-Key": "scrape"}).text
        assert c.get("/openapi.json").status_code == 401
        schema = c.get("/openapi.json", headers={"Authorization": "Bearer good"})
        assert schema.status_code == 200 and "/v1/predict" in schema.json()["paths"]
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    opened = _auth_settings(trained_model, kafka_bootstrap, topic, metrics_access="open", docs_access="open")
    with TestClient(create_app(opened)) as c:
        assert c.get("/metrics").status_code == 200 and c.get("/openapi.json").status_code == 200
        assert c.get("/docs").status_code == 200 and c.get("/redoc").status_code == 200
        assert c.post("/v1/predict", json={"features": trained_model.rows[0]}).status_code == 401
    with TestClient(
        create_app(_auth_settings(trained_model, kafka_bootstrap, topic, docs_access="off"))
    ) as c:
        assert c.get("/openapi.json", headers={"X-API-Key": "good"}).status_code == 404
        assert c.get("/docs").status_code == 404


class _BrokenModel(ServedModel):
    def predict(self, features):  # type: ignore[no-untyped-def]
        raise ValueError("weights are corrupt")


def test_a_model_error_is_a_500_and_an_error_event(trained_model, kafka_bootstrap, topic):
    app = create_app(_settings(trained_model, kafka_bootstrap, topic))
    with TestClient(app) as c:
        meta, est = artifact.load(
            trained_model.data_dir / "models", trained_model.name, trained_model.version
        )
        app.dependency_overrides[get_model] = lambda: _BrokenModel(meta, est)
        r = c.post("/v1/predict", json={"features": trained_model.rows[0]})
        assert r.status_code == 500 and "weights are corrupt" in r.json()["detail"]
        assert c.post("/v1/predict", json={"features": trained_model.rows[1]}).status_code == 500
    got = _events(kafka_bootstrap, topic, 2)
    assert len(got) == 2
    assert all(e.status == "error" and "weights are corrupt" in (e.error or "") for e in got)
    assert all(e.prediction is None for e in got)
    assert r.json()["prediction_id"] in {str(e.event_id) for e in got}


def test_feedback_schema_file_is_in_sync_with_the_contract():
    from common.events import FEEDBACK_SCHEMA_PATH, feedback_json_schema_text

    assert FEEDBACK_SCHEMA_PATH.read_text() == feedback_json_schema_text(), "run `inferstream schema --write`"


def test_metrics_pass_promtool_without_created_families_and_with_build_info(
    trained_model, kafka_bootstrap, topic
):
    from importlib.metadata import version

    with TestClient(create_app(_settings(trained_model, kafka_bootstrap, topic))) as c:
        assert c.post("/v1/predict", json={"features": trained_model.rows[0]}).status_code == 200
        text = c.get("/metrics").text
    assert "_created" not in text
    assert 'inferstream_build_info{python="' in text and f'version="{version("inferstream")}"}} 1.0' in text
    check = promtool("check", "metrics", stdin=text)
    assert check.returncode == 0, check.stdout + check.stderr
