"""The deployment files: every Kubernetes manifest validates against the Kubernetes schemas (kubernetes-validate,
offline), every kustomization names files that exist, the workloads are hardened, the shipped gateway and agent
configurations and policy load with Portcullis's own validation, and the image definition follows container practice.

No Helm implementation installs from the registries this project may use, so the project ships plain manifests
with Kustomize; Kustomize is not installable here either, so the test reads the files the kustomizations list.
The ServiceMonitor is a CRD the Kubernetes schemas do not know: it is checked structurally (named below).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from portcullis.config import load_config_text
from portcullis.config.load import load_model_text
from portcullis.config.model import AgentConfig
from portcullis.policy.load import load_policy_text

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = kubernetes_validate.latest_version()
CRDS = {"ServiceMonitor"}  # not in the Kubernetes schemas: checked structurally


def documents() -> list[tuple[Path, dict[str, Any]]]:
    yaml = YAML(typ="safe")
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


DOCS = documents()


@pytest.mark.parametrize(("path", "doc"), DOCS, ids=[f"{p.parent.name}/{p.name}" for p, _ in DOCS])
def test_every_manifest_validates(path: Path, doc: dict[str, Any]) -> None:
    if doc["kind"] in CRDS:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["spec"]["endpoints"][0]["path"] == "/metrics" and doc["spec"]["selector"]["matchLabels"]
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises with the path of the first problem


def test_kustomizations_list_files_that_exist() -> None:
    yaml = YAML(typ="safe")
    for k in K8S.rglob("kustomization.yaml"):
        for res in yaml.load(k.read_text()).get("resources", []):
            assert (k.parent / res).exists(), f"{k}: {res} does not exist"


def workloads() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _path, doc in DOCS:
        if doc["kind"] == "Deployment" or doc["kind"] == "Job":
            out.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
    return out


def test_workloads_are_hardened(monkeypatch: pytest.MonkeyPatch) -> None:
    found = workloads()
    assert {n for n, _ in found} == {"portcullis", "portcullis-agent", "portcullis-db-upgrade"}
    for name, pod in found:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in c["resources"]["limits"] and c["resources"]["requests"], name
            for env in c.get("env", []):
                assert "value" not in env or not re.search(r"(?i)key|secret|password|token|url", env["name"]), env
    gateway = dict(found)["portcullis"]
    c = gateway["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    _secrets(monkeypatch)
    shipped = load_config_text(_config("portcullis.yaml"), "configmap.yaml")
    assert gateway["terminationGracePeriodSeconds"] > shipped.limits.drain_timeout


def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Deployment's Secrets put in the environment."""
    monkeypatch.setenv("PORTCULLIS_STORE", "postgresql://portcullis:pw@db:5432/portcullis")
    monkeypatch.setenv("PORTCULLIS_PSEUDONYM_KEY", "k" * 32)


def _config(key: str, component: str = "gateway") -> str:
    for path, doc in DOCS:
        if doc["kind"] == "ConfigMap" and path.parent.name == component and key in doc["data"]:
            return str(doc["data"][key])
    raise AssertionError(f"no ConfigMap with {key}")


def test_the_shipped_configurations_load(monkeypatch: pytest.MonkeyPatch) -> None:
    _secrets(monkeypatch)
    cfg = load_config_text(_config("portcullis.yaml"), "configmap.yaml")
    assert cfg.store.startswith("postgresql://") and cfg.servers["crm"].via == "agent"
    assert cfg.recording.signing_key_env and cfg.masking.pseudonym_key_env
    load_policy_text(_config("policy.yaml"), "policy.yaml")
    agent = load_model_text(_config("agent.yaml", "agent"), "agent configmap", AgentConfig)
    assert agent.gateway.startswith("wss://") and set(agent.servers) == {"crm"}


def test_the_image_definition_follows_container_practice() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert froms and all(":" in f and not f.endswith(":latest") for f in froms)  # pinned bases
    final = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")) :]
    users = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1])  # numeric, not root
    assert not any(ln.startswith("ADD ") for ln in lines)  # COPY only: no remote fetches, no tar magic
    assert "--require-hashes" in text and "requirements/runtime.lock" in text  # pinned, verified dependencies
    assert not re.search(r"(?im)^ENV .*(password|secret|token|key)=", text)
    assert any(ln.startswith('ENTRYPOINT ["portcullis"]') for ln in final)
    assert (ROOT / "requirements" / "runtime.lock").exists() and (ROOT / ".dockerignore").exists()
