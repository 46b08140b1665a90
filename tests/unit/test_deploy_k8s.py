"""deploy/k8s, checked offline: every kustomization renders with kustomize (kubectl's),
every rendered object validates against the Kubernetes schemas of a pinned oldest and
newest supported version (kubernetes-validate, strict: unknown fields fail), KEDA's
ScaledObject against our own JSON schema, and the numbers the drain depends on agree."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from tests.unit.deploy_env import (
    DEPLOY,
    PENDING_SETTINGS,
    ROOT,
    settings_env_names,
    tool,
    unknown_env_names,
)

K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = [K8S / "base", K8S / "overlays" / "example"]
# Oldest supported (native preStop sleep needs >= 1.30; kubernetes-validate ships 1.33+)
# and newest shipped schema.
K8S_VERSIONS = ["1.33.0", "1.37.0"]
SCHEMAS = Path(__file__).parent / "schemas"
Doc = dict[str, Any]


@cache
def render(directory: Path) -> tuple[Doc, ...]:
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def find(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


@cache
def scaledobject_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / "keda-scaledobject-v1alpha1.json").read_text())
    k8s_dir = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    defs = json.loads((k8s_dir / f"v{K8S_VERSIONS[0]}-local-strict/_definitions.json").read_text())
    registry: Registry[Any] = Resource.from_contents(defs) @ Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(doc: Doc, version: str) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        assert doc["kind"] == "ScaledObject", f"no schema for KEDA {doc['kind']}"
        scaledobject_validator().validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


# --- files ------------------------------------------------------------------


def test_every_manifest_file_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} is empty"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomization_lists_exactly_its_files(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    local = {r for r in kustomization.get("resources", []) if not r.startswith("..")}
    patches = {p["path"] for p in kustomization.get("patches", [])}
    for ref in local | patches:
        assert (directory / ref).is_file(), f"{directory.name}: {ref} does not exist"
    on_disk = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert local | patches == on_disk, "a file is not listed, or listed twice"
    assert not local & patches


# --- schemas ----------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_rendered_objects_validate(directory: Path, version: str) -> None:
    docs = render(directory)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"ScaledObject", "ConfigMap", "Secret", "PersistentVolumeClaim"} <= kinds
    for doc in docs:
        try:
            validate(doc, version)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")


def test_the_validators_refuse_what_kubernetes_and_keda_would() -> None:
    """Each check can fail: a typo, a bad type, a missing field."""
    worker = json.loads(json.dumps(find(render(KUSTOMIZATIONS[0]), "Deployment", "sdserve-worker")))
    worker["spec"]["template"]["spec"]["terminationGracePeriod"] = 120
    with pytest.raises(jsonschema.ValidationError, match="terminationGracePeriod"):
        validate(worker, K8S_VERSIONS[0])
    base = find(render(KUSTOMIZATIONS[0]), "ScaledObject", "sdserve-worker")
    bad_cases: list[tuple[str, Any]] = [
        ("spec.triggers.0.metadata.threshold", 4),  # must be a string
        ("spec.triggers.0.metadata.treshold", "4"),  # typo
        ("spec.triggers.0.metricType", "Value"),  # with a fallback
        ("spec.scaleTargetRef", {"kind": "Deployment"}),  # no name
        ("spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleUp.policies.0.value", "4"),
    ]
    for path, value in bad_cases:
        mutated = json.loads(json.dumps(base))
        *parents, leaf = path.split(".")
        node: Any = mutated
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(leaf) if leaf.isdigit() else leaf] = value
        with pytest.raises(jsonschema.ValidationError):
            validate(mutated, K8S_VERSIONS[0])


# --- what the pieces must agree on -------------------------------------------


def configmap(docs: tuple[Doc, ...]) -> dict[str, str]:
    data: dict[str, str] = find(docs, "ConfigMap", "sdserve-config")["data"]
    return data


def memory_bytes(quantity: str) -> float:
    units = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|k|M|G)?", quantity)
    assert match, f"not a memory quantity: {quantity!r}"
    return float(match[1]) * units[match[2] or ""]


def container(deployment: Doc) -> Doc:
    containers: list[Doc] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_worker_shutdown_budget_matches_the_drain(directory: Path) -> None:
    docs = render(directory)
    worker = find(docs, "Deployment", "sdserve-worker")
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = int(configmap(docs)["SDSERVE_DRAIN_SECONDS"])
    assert (grace, drain) == (120, 100)
    assert grace - drain >= 15, "no time left to release the jobs after the drain"
    hook = container(worker)["lifecycle"]["preStop"]
    # The hook must not delay the drain (a sleep would keep the worker claiming).
    assert "sleep" not in hook and "kill -TERM 1" in " ".join(hook["exec"]["command"])


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_worker_requests_a_gpu_and_bounded_memory(directory: Path) -> None:
    c = container(find(render(directory), "Deployment", "sdserve-worker"))
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    assert requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"] == "1"
    assert 0 < memory_bytes(requests["memory"]) <= memory_bytes(limits["memory"])


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_worker_probes_use_its_metrics_port(directory: Path) -> None:
    docs = render(directory)
    c = container(find(docs, "Deployment", "sdserve-worker"))
    port = int(configmap(docs)["SDSERVE_WORKER_METRICS_PORT"])
    assert {"name": "metrics", "containerPort": port} in c["ports"]
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {p["port"] for p in probes.values()} == {"metrics"}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_api_is_ready_without_workers(directory: Path) -> None:
    """KEDA may hold zero workers; an API that waited for one would never get the
    traffic that brings one."""
    c = container(find(render(directory), "Deployment", "sdserve-api"))
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_scalers_target_the_right_deployments_on_real_metrics(directory: Path) -> None:
    docs = render(directory)
    scaled = find(docs, "ScaledObject", "sdserve-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "sdserve-worker"
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    queries = " ".join(t["metadata"]["query"] for t in scaled["spec"]["triggers"])
    exported = set(
        re.findall(r'"(sdserve_\w+)"', (ROOT / "src/sdserve/observability/metrics.py").read_text())
    )
    used = set(re.findall(r"sdserve_\w+", queries))
    assert {"sdserve_queue_depth", "sdserve_oldest_queued_age_seconds"} <= used
    assert used <= exported, f"queries name metrics nobody exports: {used - exported}"
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == ["sdserve-api"], (
        "KEDA makes the worker's HPA; a second one would fight it"
    )


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_selectors_match_pods_and_named_ports_exist(directory: Path) -> None:
    docs = render(directory)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()

    def selected(selector: dict[str, str]) -> list[Doc]:
        return [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]

    for svc in (d for d in docs if d["kind"] == "Service"):
        (target,) = selected(svc["spec"]["selector"])
        names = {p["name"] for p in container(target)["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        assert len(selected(pdb["spec"]["selector"]["matchLabels"])) == 1


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_models_are_mounted_read_only_from_one_claim(directory: Path) -> None:
    docs = render(directory)
    pvc = find(docs, "PersistentVolumeClaim", "sdserve-models")
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        claim = volumes["models"]["persistentVolumeClaim"]
        assert claim == {"claimName": "sdserve-models", "readOnly": True}
        mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
        assert mounts["models"]["readOnly"] is True
        assert mounts["models"]["mountPath"] == configmap(docs)["SDSERVE_MODELS_DIR"]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_env_names_are_settings_or_documented(directory: Path) -> None:
    docs = render(directory)
    names = set(configmap(docs))
    names |= set(find(docs, "Secret", "sdserve-secrets")["stringData"])
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        names |= {e["name"] for e in container(deployment).get("env", [])}
        refs = {
            r.get("configMapRef", r.get("secretRef", {}))["name"]
            for r in container(deployment)["envFrom"]
        }
        assert refs == {"sdserve-config", "sdserve-secrets"}
    assert unknown_env_names(names) == set()


def test_secret_holds_placeholders_only() -> None:
    secret = find(render(KUSTOMIZATIONS[0]), "Secret", "sdserve-secrets")
    assert "data" not in secret
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}


def test_pending_names_are_not_settings_yet() -> None:
    landed = PENDING_SETTINGS & settings_env_names()
    assert not landed, f"{landed} are Settings now: drop them from PENDING_SETTINGS"
