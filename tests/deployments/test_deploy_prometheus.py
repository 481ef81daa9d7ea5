"""deployments/prometheus/alerts.yaml passes `promtool check rules`, only names
metrics the code exports, and passes its unit tests (`promtool test rules
alerts_test.yaml`), which exercise every rule (a rule that cannot fire fails them); the
drift flow's Pushgateway payload passes `promtool check
metrics` and carries the scores per model, version and column. promtool comes from
Debian's prometheus package (.ci/ensure-promtool, run by `make test`)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.drift_metrics import push_drift

from ..support import promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deployments" / "prometheus" / "alerts.yaml"
RULE_TESTS = RULES.with_name("alerts_test.yaml")


def test_alert_rules_passpromtool() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    proc = promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


ALERTS = re.findall(r"- alert: (\w+)", RULES.read_text())


@pytest.mark.parametrize("alert", ALERTS)
def test_the_unit_tests_catch_a_rule_that_never_fires(alert: str, tmp_path: Path) -> None:
    text = RULES.read_text()
    start = text.index(f"- alert: {alert}\n")
    expr = re.compile(r"expr: .*").search(text, start)
    assert expr is not None
    (tmp_path / "alerts.yaml").write_text(text[: expr.start()] + "expr: vector(1) > 2" + text[expr.end() :])
    (tmp_path / "alerts_test.yaml").write_text(RULE_TESTS.read_text())
    proc = promtool("test", "rules", str(tmp_path / "alerts_test.yaml"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"alertname: {alert}," in out, out


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yaml"
    broken.write_text(RULES.read_text().replace("== 1", "== == 1", 1))
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_rules_name_only_metrics_the_code_exports() -> None:
    names = set(re.findall(r"\binferstream_[a-z_]*[a-z]\b", RULES.read_text()))
    code = "".join(p.read_text() for d in ("api", "consumers", "flows") for p in (ROOT / d).rglob("*.py"))
    missing = {n for n in names if f'"{n.removesuffix("_total")}"' not in code}
    assert names and not missing


SUMMARY = {
    "model": "car-loan",
    "version": "3",
    "run_time": "2026-03-01T12:00:00+00:00",
    "verdict": {"drift": True},
    "columns": [
        {"column": "car_value", "method": "wasserstein", "score": 0.31, "threshold": 0.1, "drifted": True},
        {"column": "salary_range", "method": "jensenshannon", "score": 0.02, "threshold": 0.1, "drifted": 0},
    ],
}


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A local HTTP endpoint that records what a Pushgateway would receive."""
    got: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{server.server_port}", got
    finally:
        server.shutdown()
        server.server_close()


def test_drift_scores_are_pushed_per_model_version_and_column(gateway) -> None:
    address, got = gateway
    push_drift(address, SUMMARY)
    ((method, path, body),) = got
    assert (method, path) == ("PUT", "/metrics/job/inferstream_drift/model/car-loan/version/3")
    text = body.decode()
    families = text_string_to_metric_families(text)
    samples = {(s.name, s.labels.get("column")): s.value for f in families for s in f.samples}
    assert samples[("inferstream_drift_score", "car_value")] == 0.31
    assert samples[("inferstream_drift_detected", "car_value")] == 1.0
    assert samples[("inferstream_drift_detected", "salary_range")] == 0.0
    assert samples[("inferstream_drift_run_drift", None)] == 1.0
    assert not any(n.endswith("_created") for n, _ in samples)
    check = promtool("check", "metrics", stdin=text)
    assert check.returncode == 0, check.stdout + check.stderr
