"""deployments/grafana: the provisioned data source and dashboard, checked offline.
(Every panel's SQL is executed against a warehouse loaded by the BI flow in
tests/flows/test_bi_views.py.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import orjson
import yaml

GRAFANA = Path(__file__).resolve().parents[2] / "deployments" / "grafana"


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _datasource() -> dict[str, Any]:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "inferstream.yaml").read_text())
    (ds,) = doc["datasources"]
    return ds


def test_dashboard_file_is_what_the_builder_writes() -> None:
    assert (GRAFANA / "dashboards" / "inferstream.json").read_text() == _builder().text(), (
        "run: python deployments/grafana/build_dashboard.py"
    )


def test_every_panel_uses_the_provisioned_data_source_and_has_its_place() -> None:
    ds = _datasource()
    assert ds["type"] == "grafana-postgresql-datasource" and ds["jsonData"]["database"] == "inferstream"
    assert ds["secureJsonData"]["password"] == "$POSTGRES_PASSWORD"  # from the environment, not the file
    board = orjson.loads((GRAFANA / "dashboards" / "inferstream.json").read_bytes())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        assert p["datasource"]["uid"] == ds["uid"], p["title"]
        assert all(t["datasource"]["uid"] == ds["uid"] and t["rawSql"].strip() for t in p["targets"])
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        assert g["x"] + g["w"] <= 24
        cells |= mine
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("traffic", "error", "http latency", "model latency", "prediction mix", "drift", "accuracy"):
        assert topic in titles


def test_compose_mounts_the_provisioning_where_grafana_reads_it() -> None:
    compose = yaml.safe_load((GRAFANA.parent / "compose.yaml").read_text())
    svc = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in svc["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "inferstream.yaml").read_text())
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert "POSTGRES_PASSWORD" in svc["environment"]
    worker = compose["services"]["prefect-worker"]["environment"]
    assert worker["INFERSTREAM_WAREHOUSE_BACKEND"] == "postgres"  # the flows fill what Grafana reads
