"""deploy/docker and deploy/compose.yaml, checked offline: hadolint on the Dockerfile,
the compose file's structure and environment names, the HEALTHCHECK script against a
real HTTP server. (No Docker daemon here: nothing is built or started.)"""

from __future__ import annotations

import http.server
import importlib.util
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from sdserve.testing import free_port
from tests.unit.deploy_env import DEPLOY, NON_SETTINGS_ENV, ROOT, tool, unknown_env_names

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dockerfile_passes_hadolint() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_image_runs_as_non_root_with_a_healthz_healthcheck() -> None:
    final_stage = instructions()
    last_from = max(i for i, (word, _) in enumerate(final_stage) if word == "FROM")
    final = final_stage[last_from:]
    users = [rest for word, rest in final if word == "USER"]
    assert users and not users[-1].startswith(("root", "0")), users
    (health,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    script = DEPLOY / "docker" / "healthcheck.py"
    assert str(script.relative_to(DEPLOY / "docker")) in health
    assert "/healthz" in script.read_text()
    assert ("ENTRYPOINT", '["sdserve"]') in final


def test_no_secret_is_baked_into_the_image() -> None:
    for word, rest in instructions():
        if word in ("ENV", "ARG"):
            assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY)", rest, re.I), rest


def test_torch_build_is_a_build_argument_like_the_makefile() -> None:
    args = {rest.split("=")[0] for word, rest in instructions() if word == "ARG"}
    assert {"TORCH_SPEC", "TORCH_INDEX_URL"} <= args
    makefile = (ROOT / "Makefile").read_text()
    spec = re.search(r"^TORCH_SPEC \?= (\S+)", makefile, re.M)
    assert spec and f'TORCH_SPEC="{spec[1]}"' in DOCKERFILE.read_text()


def test_image_sdserve_env_names_are_settings() -> None:
    names: set[str] = set()
    for word, rest in instructions():
        if word == "ENV":
            names |= set(re.findall(r"(SDSERVE_\w+)=", rest))
    assert names and unknown_env_names(names) == set()


def test_build_context_sends_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for word, rest in instructions():
        if word == "COPY" and "--from=" not in rest:
            *sources, _dest = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert any(source == a or source.startswith(a + "/") for a in allowed), source


# --- compose -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form so YAML anchors merge"
    return {str(k): str(v) for k, v in env.items()}


def test_compose_has_the_four_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "minio", "api", "worker"}
    assert services["api"]["command"] == ["api"]
    assert services["worker"]["command"] == ["worker"]
    assert services["api"]["image"] == services["worker"]["image"], "one image, two roles"
    assert services["api"]["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (DEPLOY / services["api"]["build"]["context"] / "deploy/docker/Dockerfile").exists()


def test_compose_redis_persists_with_aof(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] in ("everysec", "always")
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])


def test_compose_worker_reserves_a_gpu_and_drains(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    grace = int(worker["stop_grace_period"].rstrip("s"))
    drain = int(env_of(worker)["SDSERVE_DRAIN_SECONDS"])
    assert grace - drain >= 15


def test_compose_services_wire_redis_and_s3(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        env = env_of(compose["services"][name])
        assert env["SDSERVE_QUEUE_BACKEND"] == "redis"
        assert env["SDSERVE_REDIS_URL"].startswith("redis://redis:")
        assert env["SDSERVE_BLOB_BACKEND"] == "s3"
        assert env["SDSERVE_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert unknown_env_names(set(env)) == set()


def test_compose_holds_no_secret_values(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for key, value in env_of(service).items():
            if re.search(r"(SECRET|PASSWORD|ACCESS_KEY)", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{key} must come from .env"


def test_non_settings_env_names_are_documented() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    missing = {name for name in NON_SETTINGS_ENV if name not in doc}
    assert not missing


# --- HEALTHCHECK script -------------------------------------------------------


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "docker/healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_picks_the_role_port() -> None:
    hc = load_healthcheck()
    assert hc.role_port(["sdserve", "api"], {}) == 8000
    assert hc.role_port(["sdserve", "api"], {"SDSERVE_PORT": "8080"}) == 8080
    assert hc.role_port(["/sbin/docker-init", "--", "sdserve", "worker"], {}) == 9100
    env = {"SDSERVE_WORKER_METRICS_PORT": "9200", "SDSERVE_PORT": "8000"}
    assert hc.role_port(["sdserve", "worker"], env) == 9200


@pytest.fixture
def health_server() -> Iterator[tuple[int, list[int]]]:
    status = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = status[0] if self.path == "/healthz" else 404
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], status
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_exit_code_follows_healthz(health_server: tuple[int, list[int]]) -> None:
    port, status = health_server
    script = str(DEPLOY / "docker/healthcheck.py")

    def run() -> int:
        return subprocess.run([sys.executable, script, str(port)], timeout=30).returncode

    assert run() == 0
    status[0] = 503
    assert run() == 1
    status[0] = 200
    assert run() == 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    script = str(DEPLOY / "docker/healthcheck.py")
    closed = str(free_port())
    assert subprocess.run([sys.executable, script, closed], timeout=30).returncode == 1
