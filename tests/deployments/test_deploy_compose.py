"""deployments/compose.yaml: valid for Compose itself, for the compose-spec schema, and
consistent with itself (Kafka quorum, node ids, listeners, topics, health gates)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from common.events import ALERTS_TOPIC, DLQ_TOPIC, EVENTS_TOPIC, FEEDBACK_TOPIC
from common.objectstore import split_s3_url

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"
COMPOSE = DEPLOYMENTS / "compose.yaml"
KAFKA_IMAGE = "apache/kafka:"

Model = dict[str, Any]


# ---------------------------------------------------------------- the project's checks


def _listeners(env: dict[str, str]) -> dict[str, int]:
    """KAFKA_LISTENERS 'NAME://host:port,...' -> {NAME: port}."""
    out = {}
    for item in env["KAFKA_LISTENERS"].split(","):
        name, _, hostport = item.partition("://")
        out[name] = int(hostport.rsplit(":", 1)[1])
    return out


def _voter_problems(name: str, voter: str, nodes: dict[str, Model]) -> list[str]:
    """A quorum voter ``id@host:port`` of node ``name``: ``host`` is a node of that id
    whose controller listener is on ``port``."""
    m = re.fullmatch(r"(\d+)@([\w.-]+):(\d+)", voter)
    if not m:
        return [f"{name}: malformed voter {voter!r}"]
    vid, host, port = int(m[1]), m[2], int(m[3])
    target = nodes.get(host)
    if target is None:
        return [f"{name}: voter {voter} names no Kafka service of this profile"]
    problems = []
    tenv = target["environment"]
    if int(tenv["KAFKA_NODE_ID"]) != vid:
        problems.append(f"{name}: voter {voter} but {host} has node id {tenv['KAFKA_NODE_ID']}")
    if _listeners(tenv).get(tenv["KAFKA_CONTROLLER_LISTENER_NAMES"]) != port:
        problems.append(f"{name}: voter {voter} is not {host}'s controller port")
    return problems


def _node_problems(name: str, svc: Model, nodes: dict[str, Model]) -> list[str]:
    """One node's listeners, voters, advertised addresses and replication settings."""
    problems: list[str] = []
    env = svc["environment"]
    listeners = _listeners(env)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    if "controller" in env["KAFKA_PROCESS_ROLES"] and controller not in listeners:
        problems.append(f"{name}: controller listener {controller} not in KAFKA_LISTENERS")
    for voter in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","):
        problems += _voter_problems(name, voter, nodes)
    for adv in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        lname, _, hostport = adv.partition("://")
        host, port = hostport.rsplit(":", 1)
        if host not in (name, svc.get("hostname")):
            problems.append(f"{name}: advertises {host}, which is not this service")
        if listeners.get(lname) != int(port):
            problems.append(f"{name}: advertised {adv} does not match KAFKA_LISTENERS")
    rf = int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"])
    isr = int(env["KAFKA_MIN_INSYNC_REPLICAS"])
    if rf > len(nodes) or int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) > len(nodes):
        problems.append(f"{name}: replication factor {rf} > {len(nodes)} brokers")
    if len(nodes) >= 3 and not 1 < isr < rf:
        problems.append(f"{name}: min.insync.replicas {isr} must be in (1, {rf}) to survive a loss")
    return problems


def kafka_problems(model: Model) -> list[str]:
    """Quorum voters name real nodes with their own id and controller port; node ids are
    unique; every node advertises itself on its client listener; replication fits."""
    problems: list[str] = []
    nodes = {
        name: svc
        for name, svc in model["services"].items()
        if svc.get("image", "").startswith(KAFKA_IMAGE) and "KAFKA_NODE_ID" in svc.get("environment", {})
    }
    if not nodes:
        return ["no Kafka node in this profile"]
    ids: dict[int, str] = {}
    for name, svc in nodes.items():
        node_id = int(svc["environment"]["KAFKA_NODE_ID"])
        if node_id in ids:
            problems.append(f"{name}: KAFKA_NODE_ID {node_id} is also {ids[node_id]}'s")
        ids.setdefault(node_id, name)
    voter_sets = {name: svc["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for name, svc in nodes.items()}
    if len(set(voter_sets.values())) != 1:
        problems.append(f"nodes disagree on the quorum voters: {voter_sets}")
    for name, svc in nodes.items():
        problems += _node_problems(name, svc, nodes)
    return problems


def client_problems(model: Model) -> list[str]:
    """Every KAFKA_BOOTSTRAP_SERVERS / BOOTSTRAP entry is a Kafka service's client port."""
    services = model["services"]
    ports = {  # the advertised (client) ports of each node, never the controller's
        name: {
            int(adv.rsplit(":", 1)[1]) for adv in svc["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
        }
        for name, svc in services.items()
        if svc.get("image", "").startswith(KAFKA_IMAGE)
        and "KAFKA_ADVERTISED_LISTENERS" in svc.get("environment", {})
    }
    problems = []
    for name, svc in services.items():
        env = svc.get("environment") or {}
        for var in ("KAFKA_BOOTSTRAP_SERVERS", "BOOTSTRAP"):
            for hostport in filter(None, (env.get(var) or "").split(",")):
                host, port = hostport.rsplit(":", 1)
                if host not in ports:
                    problems.append(f"{name}: {var} names {host}, not a Kafka service of this profile")
                elif int(port) not in ports[host]:
                    problems.append(f"{name}: {var} port {port} is not a client listener of {host}")
    return problems


def topic_partitions(model: Model) -> dict[str, int]:
    env = model["services"]["topic-init"]["environment"]
    return {t: int(n) for t, _, n in (s.partition(":") for s in env["TOPICS"].split())}


def health_problems(model: Model) -> list[str]:
    """A service_healthy dependency has a healthcheck; a service_completed_successfully
    dependency is a one-shot job that does not restart."""
    services = model["services"]
    problems = []
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            target = services.get(dep)
            if target is None:
                continue  # disabled by profile (required: false); compose config checks the rest
            cond = spec.get("condition")
            hc = target.get("healthcheck") or {}
            if cond == "service_healthy" and (not hc or hc.get("disable")):
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
            if cond == "service_completed_successfully" and target.get("restart", "no") != "no":
                problems.append(f"{name} waits for {dep} to complete, but {dep} restarts")
    return problems


# ---------------------------------------------------------------- Compose itself


@pytest.mark.parametrize("profile", ["cluster", "single"])
def test_compose_config_is_valid(run_compose: Callable[..., Any], profile: str) -> None:
    proc = run_compose("config", "-q", profile=profile)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        (
            "    restart: unless-stopped\n    environment:\n      POSTGRES_USER",
            "    restrat: unless-stopped\n    environment:\n      POSTGRES_USER",
            "restrat",
        ),
        (
            "      postgres:\n        condition: service_healthy\n    environment:\n      PREFECT_API_D",
            "      postgress:\n        condition: service_healthy\n    environment:\n      PREFECT_API_D",
            "postgress",
        ),
    ],
    ids=["unknown-key", "unknown-dependency"],
)
def test_compose_config_rejects_a_broken_file(
    run_compose: Callable[..., Any], tmp_path: Path, old: str, new: str, error: str
) -> None:
    text = COMPOSE.read_text()
    assert old in text
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace(old, new, 1))
    proc = run_compose("config", "-q", file=broken)
    assert proc.returncode != 0
    assert error in proc.stderr


def test_profiles_choose_the_kafka_topology(run_compose: Callable[..., Any]) -> None:
    def services(profile: str) -> set[str]:
        proc = run_compose("config", "--services", profile=profile)
        assert proc.returncode == 0, proc.stderr
        return set(proc.stdout.split())

    apps = {"topic-init", "postgres", "prefect-server", "prefect-worker", "api"}
    apps |= {"lake", "audit", "fraud", "drift"}
    assert services("cluster") >= apps | {"kafka-1", "kafka-2", "kafka-3"}
    assert "kafka" not in services("cluster")
    assert services("single") >= apps | {"kafka"}
    assert not services("single") & {"kafka-1", "kafka-2", "kafka-3"}


# ---------------------------------------------------------------- compose-spec schema


def test_compose_spec_schema_accepts_the_file() -> None:
    proc = _check_jsonschema(COMPOSE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_spec_schema_rejects_a_bad_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period: 45s", "stop_grace_periods: 45s"))
    proc = _check_jsonschema(broken)
    assert proc.returncode == 1
    assert "stop_grace_periods" in proc.stdout


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    import sys

    exe = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---------------------------------------------------------------- cross-checks


@pytest.mark.parametrize("profile", ["cluster", "single"])
def test_kafka_quorum_and_nodes_are_consistent(rendered: dict[str, Model], profile: str) -> None:
    assert kafka_problems(rendered[profile]) == []


def test_cluster_profile_is_three_voters_rf3_isr2(rendered: dict[str, Model]) -> None:
    env = rendered["cluster"]["services"]["kafka-1"]["environment"]
    assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == 3
    assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2")
    init = rendered["cluster"]["services"]["topic-init"]["environment"]
    assert (init["REPLICATION_FACTOR"], init["MIN_INSYNC_REPLICAS"]) == ("3", "2")


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("KAFKA_NODE_ID: 3", "KAFKA_NODE_ID: 2", "is also"),
        ("2@kafka-2:9093,3@kafka-3:9093", "2@kafka-2:9093,3@kafka-4:9093", "names no Kafka service"),
        ("2@kafka-2:9093,3@kafka-3:9093", "2@kafka-2:9093,3@kafka-3:9094", "controller port"),
        ("PLAINTEXT://kafka-2:9092", "PLAINTEXT://kafka-1:9092", "advertises kafka-1"),
    ],
    ids=["duplicate-node-id", "voter-not-a-service", "voter-wrong-port", "advertises-another-node"],
)
def test_kafka_checks_reject_a_broken_cluster(
    render_compose: Callable[..., Model], tmp_path: Path, old: str, new: str, problem: str
) -> None:
    text = COMPOSE.read_text()
    assert old in text
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace(old, new))
    problems = kafka_problems(render_compose("cluster", file=broken))
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("profile", ["cluster", "single"])
def test_clients_point_at_kafka_client_listeners(rendered: dict[str, Model], profile: str) -> None:
    assert client_problems(rendered[profile]) == []


def test_client_check_rejects_a_wrong_bootstrap(rendered: dict[str, Model]) -> None:
    import copy

    model = copy.deepcopy(rendered["single"])
    model["services"]["api"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] = "kafka:9093"
    model["services"]["lake"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] = "kafka-1:9092"
    problems = client_problems(model)
    assert any("api" in p and "9093" in p for p in problems), problems
    assert any("lake" in p and "kafka-1" in p for p in problems), problems


def test_topic_init_creates_every_topic_and_the_app_knows_the_partitions(
    rendered: dict[str, Model],
) -> None:
    model = rendered["cluster"]
    topics = topic_partitions(model)
    assert set(topics) == {EVENTS_TOPIC, FEEDBACK_TOPIC, DLQ_TOPIC, ALERTS_TOPIC}
    command = " ".join(model["services"]["topic-init"]["command"])
    for var in model["services"]["topic-init"]["environment"]:
        assert f"${var}" in command, f"topic-init sets {var} but its script never reads it"
    for name, svc in model["services"].items():
        env = svc.get("environment") or {}
        if "INFERSTREAM_EVENTS_PARTITIONS" in env:
            assert int(env["INFERSTREAM_EVENTS_PARTITIONS"]) == topics[EVENTS_TOPIC], name


def test_consumer_groups_are_distinct(rendered: dict[str, Model]) -> None:
    services = rendered["cluster"]["services"]
    sinks = ("lake", "audit", "fraud", "drift")
    groups = {s: services[s]["environment"]["INFERSTREAM_GROUP_ID"] for s in sinks}
    assert groups == {"lake": "lake", "audit": "audit", "fraud": "fraud", "drift": "drift-monitor"}
    for s in groups:
        assert services[s]["command"] == ["consume", s]


@pytest.mark.parametrize("profile", ["cluster", "single"])
def test_health_gates_are_real(rendered: dict[str, Model], profile: str) -> None:
    assert health_problems(rendered[profile]) == []


def test_health_check_rejects_waiting_on_an_unchecked_service(
    render_compose: Callable[..., Model], tmp_path: Path
) -> None:
    text = COMPOSE.read_text()
    old = "      prefect-server:\n        condition: service_healthy\n"
    assert old in text
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace(old, "      lake:\n        condition: service_healthy\n"))
    problems = health_problems(render_compose("cluster", file=broken))
    assert any("waits for lake to be healthy" in p for p in problems), problems


def test_api_is_replicated_with_a_production_producer(rendered: dict[str, Model]) -> None:
    api = rendered["cluster"]["services"]["api"]
    env = api["environment"]
    assert api["deploy"]["replicas"] >= 2
    assert env["INFERSTREAM_KAFKA_ACKS"] == "all"
    assert env["INFERSTREAM_KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    port = int(env["INFERSTREAM_PORT"])
    assert {p["target"] for p in api["ports"]} == {port}
    # enough host ports for the replicas, one each
    (published,) = {p["published"] for p in api["ports"]}
    lo, hi = (int(x) for x in published.split("-"))
    assert hi - lo + 1 >= api["deploy"]["replicas"]
    assert f":{port}/readyz" in " ".join(api["healthcheck"]["test"])


def test_lake_and_reports_are_on_the_s3_store(rendered: dict[str, Model]) -> None:
    services = rendered["cluster"]["services"]
    data_dir = services["lake"]["environment"]["INFERSTREAM_DATA_DIR"]

    def mounts(svc: str) -> dict[str, dict[str, Any]]:
        return {m["target"]: m for m in services[svc].get("volumes", [])}

    store = services["seaweedfs"]
    buckets = next(a.removeprefix("-bucket=") for a in store["command"] if a.startswith("-bucket=")).split(
        ","
    )
    s3_port = next(a.removeprefix("-s3.port=") for a in store["command"] if a.startswith("-s3.port="))
    lake_bucket = urlparse(services["lake"]["environment"]["INFERSTREAM_LAKE_URL"]).netloc
    for svc in ("lake", "prefect-worker"):  # the writer and the readers of the lake
        env = services[svc]["environment"]
        assert env["INFERSTREAM_LAKE_URL"].startswith(f"s3://{lake_bucket}/") and lake_bucket in buckets, svc
        assert env["INFERSTREAM_S3_ENDPOINT"] == f"http://seaweedfs:{s3_port}", svc
        assert env["INFERSTREAM_S3_ACCESS_KEY_ID"] == store["environment"]["AWS_ACCESS_KEY_ID"], svc
        assert env["INFERSTREAM_S3_SECRET_ACCESS_KEY"] == store["environment"]["AWS_SECRET_ACCESS_KEY"], svc
        assert services[svc]["depends_on"]["seaweedfs"]["condition"] == "service_healthy", svc
        assert f"{data_dir}/lake" not in mounts(svc), svc  # no shared lake volume any more
    # the drift reports (written by the worker's flows only) in a bucket of their own
    reports_bucket, _ = split_s3_url(
        services["prefect-worker"]["environment"]["INFERSTREAM_REPORTS_URL"], "url"
    )
    assert reports_bucket in set(buckets) - {lake_bucket}
    assert not any("reports" in target for target in mounts("prefect-worker"))
    assert all(
        "INFERSTREAM_REPORTS_URL" not in services[s].get("environment", {})
        for s in services
        if s != "prefect-worker"
    )
    assert "reports" not in rendered["cluster"].get("volumes", {})  # no volume for them any more
    # the API serves the models; the drift monitor and the drift flow read their references
    for svc in ("api", "drift", "prefect-worker"):
        assert mounts(svc)[f"{data_dir}/models"]["source"] == "models", svc
    for svc in services.values():
        for m in svc.get("volumes", []):
            if m["type"] == "bind":
                assert Path(m["source"]).exists(), m
