"""Every file in deploy/ is checked offline by a real validator: the compose file against the
compose specification's schema (check-jsonschema's bundled copy), the Kubernetes manifests against
Kubernetes' schemas (kubernetes-validate, strict), the Prometheus config and the dashboard's
queries by promtool, the team config by argentic itself. Then the settings that matter for
replicas: a unique client id per replica, each process logged in as its role, probes, QoS and
session expiry."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from argentic.config import load_config
from argentic.testing.processes import find_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
TEAM = load_config(DEPLOY / "team.yaml")
ROLES = sorted(TEAM.roles)
METRICS_PORT = 9464


def tool(name: str) -> str:
    """A validator installed in the project environment (beside this Python)."""
    return str(Path(sys.executable).parent / name)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


# --- the validators ------------------------------------------------------------------------------


def test_the_compose_file_fits_the_compose_specification() -> None:
    checked = run(
        tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_each_kubernetes_manifest_fits_the_kubernetes_schemas(manifest: Path) -> None:
    checked = run(tool("kubernetes-validate"), "--strict", "--quiet", str(manifest))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (for kustomize) is not installed")
def test_the_kustomization_builds_and_what_it_builds_fits_the_schemas(tmp_path: Path) -> None:
    built = run("kubectl", "kustomize", str(DEPLOY))
    assert built.returncode == 0, built.stderr
    output = tmp_path / "built.yaml"
    output.write_text(built.stdout)
    checked = run(tool("kubernetes-validate"), "--strict", "--quiet", str(output))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    kinds = {(doc["kind"], doc["metadata"]["name"].split("-")[0]) for doc in yaml.safe_load_all(built.stdout)}
    assert ("ConfigMap", "argentic") in kinds and ("ConfigMap", "emqx") in kinds


def test_the_prometheus_config_is_valid() -> None:
    promtool = find_binary("promtool", "/usr/bin/promtool", "prometheus")
    checked = run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "grafana" / "dashboards" / "argentic.json").read_text())
    return loaded


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses each expression as a recording rule: a query Prometheus would refuse fails.
    exprs = [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool = find_binary("promtool", "/usr/bin/promtool", "prometheus")
    checked = run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = " ".join(exprs)
    for metric in (
        "argentic_questions_total",
        "argentic_question_duration_seconds_bucket",
        "argentic_tool_calls_total",
        "argentic_tool_call_duration_seconds_bucket",
        "gen_ai_client_token_usage",
        "gen_ai_client_operation_duration_seconds_bucket",
        "argentic_model_time_to_first_token_seconds_bucket",
        "argentic_model_retries_total",
        "argentic_broker_reconnects_total",
        "argentic_messages_dropped_total",
        "argentic_tasks",
        "vllm:num_requests_waiting",
    ):
        assert metric in text, metric
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_the_team_config_is_argentics_with_the_settings_replicas_need() -> None:
    # load_config (at import) validated it; these are the settings docs/deploy.md explains.
    assert TEAM.messaging.qos == 1 and TEAM.messaging.persistent
    assert 0 < TEAM.messaging.session_expiry_s <= 60
    assert TEAM.messaging.protocol == "5" and TEAM.messaging.embedded_broker == "never"
    assert TEAM.storage.url is not None and TEAM.storage.url.startswith("redis://")
    assert set(TEAM.llm.endpoints) == {"planner", "coder"}


# --- what the files say --------------------------------------------------------------------------


def login(environment: dict[str, str]) -> str:
    return environment["ARGENTIC_MESSAGING__USERNAME"]


def test_compose_runs_each_role_with_replicas_each_replica_its_own_client_id() -> None:
    services = compose()["services"]
    for role in ROLES:
        service = services[role]
        assert service["deploy"]["replicas"] >= 2
        assert login(service["environment"]) == role
        assert service["environment"]["ARGENTIC_METRICS__PORT"] == str(METRICS_PORT)
        command = " ".join(service["command"])
        assert f"CLIENT_ID={role}-$$HOSTNAME" in command and f"--roles {role}" in command
    assert login(services["tools-math"]["environment"]) == TEAM.tools.service_name
    for endpoint, device in (("planner", "0"), ("coder", "1")):
        devices = services[f"vllm-{endpoint}"]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "device_ids": [device], "capabilities": ["gpu"]}]
        assert TEAM.llm.endpoints[endpoint].base_url == f"http://vllm-{endpoint}:8000/v1"
    assert services["emqx"]["environment"]["EMQX_MQTT__SHARED_SUBSCRIPTION"] == "true"


def deployments() -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for manifest in MANIFESTS
        for doc in documents(manifest)
        if doc["kind"] == "Deployment"
    }


def test_kubernetes_runs_each_role_as_a_deployment_with_probes_on_the_metrics_port() -> None:
    found = deployments()
    for name, user in [*((role, role) for role in ROLES), ("tools-math", TEAM.tools.service_name)]:
        pod = found[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {item["name"]: item for item in container["env"]}
        assert env["ARGENTIC_MESSAGING__USERNAME"]["value"] == user
        assert env["ARGENTIC_MESSAGING__PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == user
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["ARGENTIC_MESSAGING__CLIENT_ID"]["value"] == "$(POD_NAME)"
        assert env["ARGENTIC_METRICS__PORT"]["value"] == str(METRICS_PORT)
        assert container["ports"] == [{"name": "metrics", "containerPort": METRICS_PORT}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for endpoint in TEAM.llm.endpoints:
        (container,) = found[f"vllm-{endpoint}"]["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_every_login_has_a_user_in_the_emqx_example() -> None:
    with (DEPLOY / "emqx" / "users.example.csv").open() as users:
        names = {row["user_id"] for row in csv.DictReader(users)}
    logins = {
        login(s["environment"])
        for s in compose()["services"].values()
        if "environment" in s and "ARGENTIC_MESSAGING__USERNAME" in s["environment"]
    }
    assert logins <= names
