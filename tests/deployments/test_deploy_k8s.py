"""deployments/k8s/: valid for a stated Kubernetes version (kubernetes-validate --strict),
Strimzi resources valid against the vendored CRD schemas, and consistent with each other
and with compose.yaml (ports, names, partitions, replicas, shutdown timing)."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from api.settings import ApiSettings
from common.events import ALERTS_TOPIC, DLQ_TOPIC, EVENTS_TOPIC, FEEDBACK_TOPIC
from common.objectstore import split_s3_url

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"
K8S = DEPLOYMENTS / "k8s"
SCHEMAS = K8S / "schemas"
KUBERNETES_VERSION = "1.31.0"
STRIMZI_KINDS = {"Kafka": "kafka", "KafkaNodePool": "kafkanodepool", "KafkaTopic": "kafkatopic"}

Doc = dict[str, Any]


def _kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run(
        [str(exe), "--strict", "-k", KUBERNETES_VERSION, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = _find(docs, kind, name)
    return doc


# ---------------------------------------------------------------- kubernetes-validate


def test_kustomization_lists_every_manifest(k8s_files: list[Path]) -> None:
    on_disk = {p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert set(k8s_files) == on_disk
    assert len(k8s_files) == len(set(k8s_files))


def test_manifests_are_valid_for_the_stated_kubernetes(k8s_files: list[Path]) -> None:
    proc = _kubernetes_validate(*k8s_files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # It only warns on kinds it has no schema for; those may only be Strimzi's, which
    # test_strimzi_resources_match_the_crd_schemas validates instead. A typo in a core
    # apiVersion would otherwise pass as a warning.
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith(("WARN", "ERROR")):
            m = re.search(r"for kind (\w+) with api version kafka\.strimzi\.io/v1beta2", line)
            assert m and m[1] in STRIMZI_KINDS, line
    passed = re.findall(r"passed for resource (\S+)", proc.stdout)
    assert len(passed) >= 15, proc.stdout


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("          readinessProbe:", "          readinesProbe:"),
        ("  minReplicas: 3", "  minReplicas: three"),
    ],
    ids=["unknown-field", "wrong-type"],
)
def test_kubernetes_validate_rejects_a_broken_manifest(tmp_path: Path, old: str, new: str) -> None:
    text = (K8S / "api.yaml").read_text()
    assert old in text
    broken = tmp_path / "api.yaml"
    broken.write_text(text.replace(old, new, 1))
    proc = _kubernetes_validate(broken)
    assert proc.returncode != 0, proc.stdout


# ---------------------------------------------------------------- Strimzi CRD schemas


def _structural_strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it with strict field validation: an
    object with declared properties rejects unknown ones unless it preserves them."""
    if isinstance(schema, list):
        return [_structural_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _structural_strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in schema and "additionalProperties" not in schema:
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


def _strimzi_validator(kind: str) -> jsonschema.protocols.Validator:
    raw = yaml.safe_load((SCHEMAS / f"{STRIMZI_KINDS[kind]}.v1beta2.yaml").read_text())
    schema = _structural_strict(raw)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def strimzi_errors(doc: Doc) -> list[str]:
    if doc.get("apiVersion") != "kafka.strimzi.io/v1beta2":
        return [f"{doc['kind']}: apiVersion {doc.get('apiVersion')} is not kafka.strimzi.io/v1beta2"]
    return [
        f"{doc['kind']}/{doc['metadata']['name']} {'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _strimzi_validator(doc["kind"]).iter_errors(doc)
    ]


def test_strimzi_resources_match_the_crd_schemas(k8s_docs: list[Doc]) -> None:
    strimzi = [d for d in k8s_docs if d["kind"] in STRIMZI_KINDS]
    assert {d["kind"] for d in strimzi} == set(STRIMZI_KINDS)
    assert [e for d in strimzi for e in strimzi_errors(d)] == []


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [
        ("KafkaTopic", lambda d: d["spec"].update(partitions=0), "less than the minimum"),
        ("KafkaTopic", lambda d: d["spec"].update(partition=12), "'partition' was unexpected"),
        ("KafkaNodePool", lambda d: d["spec"].pop("roles"), "'roles' is a required property"),
        ("KafkaNodePool", lambda d: d["spec"].update(roles=["leader"]), "is not one of"),
        ("Kafka", lambda d: d["spec"]["kafka"]["listeners"][0].pop("tls"), "'tls' is a required"),
        ("Kafka", lambda d: d["spec"]["kafka"].update(replica=3), "'replica' was unexpected"),
    ],
    ids=[
        "topic-partitions-0",
        "topic-typo",
        "pool-no-roles",
        "pool-bad-role",
        "listener-no-tls",
        "kafka-typo",
    ],
)
def test_strimzi_schema_rejects_a_broken_resource(
    k8s_docs: list[Doc], kind: str, mutate: Any, expected: str
) -> None:
    doc = copy.deepcopy(_find(k8s_docs, kind)[0])
    mutate(doc)
    errors = strimzi_errors(doc)
    assert any(expected in e for e in errors), errors


# ---------------------------------------------------------------- cross-checks


def test_kafka_is_kraft_with_a_three_voter_quorum(k8s_docs: list[Doc]) -> None:
    (kafka,) = _find(k8s_docs, "Kafka")
    annotations = kafka["metadata"]["annotations"]
    assert annotations["strimzi.io/kraft"] == "enabled"
    assert annotations["strimzi.io/node-pools"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    pools = [
        p
        for p in _find(k8s_docs, "KafkaNodePool")
        if p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    ]
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert controllers >= 3 and controllers % 2 == 1, "a KRaft quorum needs an odd number >= 3"
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3 <= brokers
    assert config["min.insync.replicas"] == 2
    assert config["auto.create.topics.enable"] is False


def test_topics_match_the_cluster_and_compose(k8s_docs: list[Doc], rendered: dict[str, Any]) -> None:
    (kafka,) = _find(k8s_docs, "Kafka")
    brokers = sum(
        p["spec"]["replicas"] for p in _find(k8s_docs, "KafkaNodePool") if "broker" in p["spec"]["roles"]
    )
    topics = {}
    for t in _find(k8s_docs, "KafkaTopic"):
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        spec = t["spec"]
        assert 1 < spec["config"]["min.insync.replicas"] < spec["replicas"] <= brokers
        topics[spec.get("topicName", t["metadata"]["name"])] = spec["partitions"]
    assert set(topics) == {EVENTS_TOPIC, FEEDBACK_TOPIC, DLQ_TOPIC, ALERTS_TOPIC}
    env = rendered["cluster"]["services"]["topic-init"]["environment"]
    compose_topics = {t: int(n) for t, _, n in (s.partition(":") for s in env["TOPICS"].split())}
    assert topics == compose_topics


def test_bootstrap_names_the_strimzi_service_and_partitions_match(
    k8s_docs: list[Doc], k8s_env: Any, k8s_workloads: Any
) -> None:
    (kafka,) = _find(k8s_docs, "Kafka")
    (listener,) = [x for x in kafka["spec"]["kafka"]["listeners"] if not x["tls"]]
    expected = f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    events = _one(k8s_docs, "KafkaTopic", EVENTS_TOPIC)["spec"]["partitions"]
    for w in k8s_workloads(k8s_docs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            env = k8s_env(k8s_docs, c)
            if "KAFKA_BOOTSTRAP_SERVERS" in env:
                assert env["KAFKA_BOOTSTRAP_SERVERS"] == expected, w["metadata"]["name"]
            if "INFERSTREAM_EVENTS_PARTITIONS" in env:
                assert int(env["INFERSTREAM_EVENTS_PARTITIONS"]) == events


def test_consumer_replicas_do_not_exceed_partitions(k8s_docs: list[Doc], k8s_env: Any) -> None:
    events = _one(k8s_docs, "KafkaTopic", EVENTS_TOPIC)["spec"]["partitions"]
    consumers = [d for d in _find(k8s_docs, "Deployment") if d["metadata"]["name"].startswith("consumer-")]
    names = {d["metadata"]["name"] for d in consumers}
    assert names == {"consumer-lake", "consumer-audit", "consumer-fraud", "consumer-drift"}
    groups = set()
    for d in consumers:
        assert 1 <= d["spec"]["replicas"] <= events, d["metadata"]["name"]
        (c,) = d["spec"]["template"]["spec"]["containers"]
        sink = d["metadata"]["name"].removeprefix("consumer-")
        assert c["args"] == ["consume", sink]
        groups.add(k8s_env(k8s_docs, c)["INFERSTREAM_GROUP_ID"])
    assert len(groups) == 4
    # the drift monitor keeps whole windows: one process (consumers/drift.py, "Scale")
    assert _one(k8s_docs, "Deployment", "consumer-drift")["spec"]["replicas"] == 1


def _api(docs: list[Doc]) -> tuple[Doc, Doc]:
    deploy = _one(docs, "Deployment", "api")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return deploy, container


def test_api_ports_and_probes_agree(k8s_docs: list[Doc], rendered: dict[str, Any], k8s_env: Any) -> None:
    deploy, c = _api(k8s_docs)
    env = k8s_env(k8s_docs, c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == int(env["INFERSTREAM_PORT"]) == ApiSettings.model_fields["port"].default
    assert int(rendered["cluster"]["services"]["api"]["environment"]["INFERSTREAM_PORT"]) == ports["http"]
    assert env["INFERSTREAM_HOST"] == "0.0.0.0"  # reachable from the kubelet and the Service
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    svc = _one(k8s_docs, "Service", "api")
    assert svc["spec"]["selector"] == deploy["spec"]["template"]["metadata"]["labels"]
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in ports or p["targetPort"] in ports.values()


def test_api_shutdown_outlasts_the_drain(k8s_docs: list[Doc], rendered: dict[str, Any]) -> None:
    deploy, c = _api(k8s_docs)
    # The API entry point passes uvicorn a fixed graceful shutdown (or, later, a setting).
    cli = (Path(__file__).resolve().parents[2] / "inferstream" / "cli.py").read_text()
    fixed = [float(x) for x in re.findall(r"timeout_graceful_shutdown=(\d+(?:\.\d+)?)", cli)]
    fields = [f for name, f in ApiSettings.model_fields.items() if "shutdown" in name or "drain" in name]
    graceful = max(fixed + [float(f.default) for f in fields if f.default is not None])
    assert graceful > 0, "no uvicorn graceful shutdown found in inferstream/cli.py or ApiSettings"
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(pre_stop[1]) + graceful
    stop = rendered["cluster"]["services"]["api"]["stop_grace_period"]
    assert stop == "45s" and int(stop.removesuffix("s")) > graceful


def test_api_scaling_and_disruption_budget_fit(k8s_docs: list[Doc]) -> None:
    deploy, _ = _api(k8s_docs)
    hpa = _one(k8s_docs, "HorizontalPodAutoscaler", "api")
    pdb = _one(k8s_docs, "PodDisruptionBudget", "api")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    assert hpa["spec"]["minReplicas"] == deploy["spec"]["replicas"]
    # a node drain must be able to evict one pod at the minimum size
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert (
        deploy["spec"]["selector"]["matchLabels"].items()
        <= deploy["spec"]["template"]["metadata"]["labels"].items()
    )


def test_volumes_and_claims_exist(k8s_docs: list[Doc], k8s_workloads: Any) -> None:
    claims = {d["metadata"]["name"] for d in _find(k8s_docs, "PersistentVolumeClaim")}
    for w in k8s_workloads(k8s_docs):
        pod = w["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims
        for c in pod["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{w['metadata']['name']}: mount {m['name']}"
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_lake_is_in_object_storage_with_credentials_from_a_secret(k8s_docs: list[Doc]) -> None:
    common = _one(k8s_docs, "ConfigMap", "inferstream-common")["data"]
    assert common["INFERSTREAM_LAKE_URL"].startswith("s3://")
    assert common["INFERSTREAM_S3_ENDPOINT"].startswith("https://")
    secret = _one(k8s_docs, "Secret", "inferstream-s3")["stringData"]
    assert set(secret) == {"INFERSTREAM_S3_ACCESS_KEY_ID", "INFERSTREAM_S3_SECRET_ACCESS_KEY"}
    for kind, name in (("Deployment", "consumer-lake"), ("Deployment", "prefect-worker")):
        pod = _one(k8s_docs, kind, name)["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        refs = [e.get("secretRef", {}).get("name") for e in c["envFrom"]]
        assert "inferstream-s3" in refs, name
        assert all("lake" not in v["name"] for v in pod.get("volumes", [])), name
    # no ReadWriteMany claim for the lake any more
    assert all("lake" not in d["metadata"]["name"] for d in _find(k8s_docs, "PersistentVolumeClaim"))


def test_the_reports_are_in_object_storage_with_credentials_from_a_secret(k8s_docs: list[Doc]) -> None:
    flows = _one(k8s_docs, "ConfigMap", "inferstream-flows")["data"]
    common = _one(k8s_docs, "ConfigMap", "inferstream-common")["data"]
    reports_bucket, _ = split_s3_url(flows["INFERSTREAM_REPORTS_URL"], "INFERSTREAM_REPORTS_URL")
    lake_bucket, _ = split_s3_url(common["INFERSTREAM_LAKE_URL"], "INFERSTREAM_LAKE_URL")
    assert reports_bucket != lake_bucket  # its own bucket: served to browsers, the lake is not
    pod = _one(k8s_docs, "Deployment", "prefect-worker")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    refs = {e.get("configMapRef", e.get("secretRef", {})).get("name") for e in c["envFrom"]}
    assert {"inferstream-common", "inferstream-flows", "inferstream-s3"} <= refs
    # no claim for the reports: the worker's working folder is an emptyDir with a bound
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert not [name for name in claims if "reports" in name]
    work = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    data_dir = common["INFERSTREAM_DATA_DIR"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == work[f"{data_dir}/reports"]]
    assert vol["emptyDir"]["sizeLimit"]
    assert all("reports" not in d["metadata"]["name"] for d in _find(k8s_docs, "PersistentVolumeClaim"))


def test_every_workload_that_reads_models_mounts_them(k8s_docs: list[Doc]) -> None:
    """The API serves them, the drift monitor and the drift flow (the Prefect worker)
    read each model's reference data and spec from the models directory."""
    data_dir = _one(k8s_docs, "ConfigMap", "inferstream-common")["data"]["INFERSTREAM_DATA_DIR"]
    readers = ["api", "prefect-worker"]
    names = [d["metadata"]["name"] for d in _find(k8s_docs, "Deployment")]
    readers += [name for name in names if "drift" in name]
    assert len(readers) >= 3
    for name in readers:
        pod = _one(k8s_docs, "Deployment", name)["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        assert f"{data_dir}/models" in mounts, f"{name} does not mount the models"
        (vol,) = [v for v in pod["volumes"] if v["name"] == mounts[f"{data_dir}/models"]["name"]]
        assert vol["persistentVolumeClaim"]["claimName"] == "inferstream-models", name


def test_cross_checks_reject_broken_references(k8s_docs: list[Doc], k8s_env: Any) -> None:
    docs = copy.deepcopy(k8s_docs)
    _, c = _api(docs)
    c["envFrom"].append({"configMapRef": {"name": "inferstream-missing"}})
    with pytest.raises(AssertionError, match="missing ConfigMap"):
        k8s_env(docs, c)
    lake = _one(docs, "Deployment", "consumer-lake")
    lake["spec"]["replicas"] = 13
    with pytest.raises(AssertionError, match="consumer-lake"):
        test_consumer_replicas_do_not_exceed_partitions(docs, k8s_env)
