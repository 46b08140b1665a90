"""The authorization matrix: every route x no key / bad key / reader / user / admin x
own / other tenant, over real HTTP through uvicorn, with the status each must get.

Tenant "acme" owns every object named in a path (a finished job and its image, a
finished workflow); callers of tenant "beta" are "other". A route's expected status
is computed from one rule, written once in ``expected``:
  public route -> its status;  no/bad key -> 401;  role too low -> 403;
  another tenant's object -> 404 (422 for an image id used as an input) - never 403;
  otherwise -> the route's success status.
"""

from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from PIL import Image

from sdserve.config import Settings
from sdserve.engine.fake import FakeEngine
from sdserve.security.keys import Role
from sdserve.worker.registry import WorkerState
from tests.conftest import free_port
from tests.integration.live import LiveService, start_live

TINY = {"prompt": "a red circle", "num_inference_steps": 1, "width": 64, "height": 64}


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # {job} {image} {wf} {key} {victim} are filled from the fixture
    need: Role | None  # None: public
    ok: int
    body: dict[str, Any] | None = None
    scoped: bool = False  # names one of acme's objects
    other: int = 404  # what another tenant gets for a scoped route


ROUTES = [
    # --- data plane ---
    Route("list jobs", "GET", "/v1/jobs", Role.reader, 200),
    Route("read job", "GET", "/v1/jobs/{job}", Role.reader, 200, scoped=True),
    Route("job events", "GET", "/v1/jobs/{job}/events", Role.reader, 200, scoped=True),
    Route("cancel job", "DELETE", "/v1/jobs/{job}", Role.user, 200, scoped=True),
    Route("read image", "GET", "/v1/images/{image}", Role.reader, 200, scoped=True),
    Route("read workflow", "GET", "/v1/workflows/{wf}", Role.reader, 200, scoped=True),
    Route("workflow events", "GET", "/v1/workflows/{wf}/events", Role.reader, 200, scoped=True),
    Route("cancel workflow", "DELETE", "/v1/workflows/{wf}", Role.user, 200, scoped=True),
    Route("models", "GET", "/v1/models", Role.reader, 200),
    Route("submit job", "POST", "/v1/jobs", Role.user, 202, body=TINY),
    Route("generate", "POST", "/v1/generate", Role.user, 200, body=TINY),
    Route("submit workflow", "POST", "/v1/workflows", Role.user, 202, body={"steps": [TINY]}),
    Route(
        "job from an image id",
        "POST",
        "/v1/jobs",
        Role.user,
        202,
        body={**TINY, "task": "img2img", "image_id": "{image}", "strength": 1.0},
        scoped=True,
        other=422,
    ),
    Route(
        "generate from an image id",
        "POST",
        "/v1/generate",
        Role.user,
        200,
        body={**TINY, "task": "img2img", "image_id": "{image}", "strength": 1.0},
        scoped=True,
        other=422,
    ),
    Route(
        "workflow from an image id",
        "POST",
        "/v1/workflows",
        Role.user,
        202,
        body={"image_id": "{image}", "steps": [{**TINY, "task": "img2img", "strength": 1.0}]},
        scoped=True,
        other=422,
    ),
    # --- admin API (cross-tenant by design: "other" admins get the same answers) ---
    Route("admin list keys", "GET", "/v1/admin/keys", Role.admin, 200),
    Route("admin read key", "GET", "/v1/admin/keys/{key}", Role.admin, 200),
    Route(
        "admin create key",
        "POST",
        "/v1/admin/keys",
        Role.admin,
        201,
        body={"tenant": "gamma", "role": "reader"},
    ),
    Route(
        "admin rotate key",
        "POST",
        "/v1/admin/keys/{key}/rotate",
        Role.admin,
        201,
        body={"overlap_seconds": 3600},
    ),
    Route("admin revoke key", "DELETE", "/v1/admin/keys/{victim}", Role.admin, 200),
    Route("admin tenants", "GET", "/v1/admin/tenants", Role.admin, 200),
    Route(
        "admin set webhook secret",
        "PUT",
        "/v1/admin/tenants/gamma/webhook-secret",
        Role.admin,
        200,
        body={},
    ),
    Route(
        "admin clear webhook secret",
        "DELETE",
        "/v1/admin/tenants/gamma/webhook-secret",
        Role.admin,
        200,
    ),
    Route("admin list jobs", "GET", "/v1/admin/jobs", Role.admin, 200),
    Route("admin read job", "GET", "/v1/admin/jobs/{job}", Role.admin, 200),
    Route("admin cancel job", "DELETE", "/v1/admin/jobs/{job}", Role.admin, 200),
    Route("admin reload models", "POST", "/v1/admin/models/reload", Role.admin, 200),
    Route("admin audit log", "GET", "/v1/admin/audit", Role.admin, 200),
    Route("admin audit verify", "GET", "/v1/admin/audit/verify", Role.admin, 200),
    Route("admin erase tenant", "POST", "/v1/admin/tenants/delta/erase", Role.admin, 200),
    Route("admin dead letters", "GET", "/v1/admin/dead-letters", Role.admin, 200),
    Route("admin purge dead letters", "DELETE", "/v1/admin/dead-letters", Role.admin, 200),
    Route("admin held jobs", "GET", "/v1/admin/safety/held", Role.admin, 200),
    Route("admin safety records", "GET", "/v1/admin/safety/records", Role.admin, 200),
    Route("admin appeals", "GET", "/v1/admin/safety/appeals", Role.admin, 200),
    Route(
        "admin tenant threshold",
        "PUT",
        "/v1/admin/safety/tenants/gamma",
        Role.admin,
        200,
        body={"prompt_threshold": 0.8},
    ),
    Route(
        "admin key threshold",
        "PUT",
        "/v1/admin/safety/keys/{key}",
        Role.admin,
        200,
        body={"prompt_threshold": 0.8},
    ),
    # --- public ---
    Route("healthz", "GET", "/healthz", None, 200),
    Route("readyz", "GET", "/readyz", None, 200),
    Route("metrics", "GET", "/metrics", None, 200),
    Route("openapi", "GET", "/openapi.json", None, 200),
]

CALLERS = [
    "none",
    "bad",
    "acme:reader",
    "acme:user",
    "acme:admin",
    "beta:reader",
    "beta:user",
    "beta:admin",
]


def expected(route: Route, caller: str) -> int:
    if route.need is None:
        return route.ok
    if caller in ("none", "bad"):
        return 401
    tenant, role = caller.split(":")
    if not Role(role).includes(route.need):
        return 403
    if route.scoped and tenant != "acme":
        return route.other
    return route.ok


@dataclass
class World:
    svc: LiveService
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def headers(self, caller: str) -> dict[str, str]:
        if caller == "none":
            return {}
        if caller == "bad":
            # Well-formed, and naming a real key id: only the secret is wrong.
            key_id = self.keys["acme:admin"].split("-")[1]
            return {"Authorization": f"Bearer sk-{key_id}-{'A' * 43}"}
        return {"Authorization": f"Bearer {self.keys[caller]}"}

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            return value.format(**self.ids) if "{" in value else value
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Any) -> Iterator[World]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("authz"),
        queue_backend="sqlite",
        model=str(tiny_model_dir),
        port=free_port(),
        batch_window_ms=0,
        poll_interval_ms=50,
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        auth="on",
    )
    svc = start_live(settings)
    svc.start_workers(FakeEngine())
    w = World(svc)
    for caller in CALLERS[2:]:
        tenant, role = caller.split(":")
        w.keys[caller] = svc.services.keys.create(tenant, Role(role)).key
    w.ids["key"] = svc.services.keys.create("gamma", Role.user).record.id
    w.ids["victim"] = svc.services.keys.create("gamma", Role.user).record.id
    own = {"Authorization": f"Bearer {w.keys['acme:user']}"}
    with svc.client(headers=own) as c:
        made = c.post("/v1/generate", json=TINY)
        assert made.status_code == 200, made.text
        w.ids["job"], w.ids["image"] = made.json()["job_id"], made.json()["image_ids"][0]
        wf = c.post("/v1/workflows", json={"steps": [TINY]})
        assert wf.status_code == 202, wf.text
        w.ids["wf"] = wf.json()["id"]
        for _ in range(600):
            if c.get(f"/v1/workflows/{w.ids['wf']}").json()["status"] == "succeeded":
                break
            time.sleep(0.05)
    # Workers re-publish their state, as worker processes do (readyz reads it).
    stop = threading.Event()

    def publish() -> None:
        while not stop.wait(1.0):
            for worker in svc.workers:
                svc.services.registry.publish(
                    WorkerState(id=worker.id, pid=0, ready=True, models_loaded=["tiny"])
                )

    threading.Thread(target=publish, daemon=True).start()
    yield w
    stop.set()
    svc.stop()


CASES = [(r, c) for r in ROUTES for c in CALLERS]

# Routes whose authorization is proven in their own suites (they need objects this
# module does not make, or answer in another API's envelope).
COVERED_ELSEWHERE = {
    ("GET", "/v1/admin/dead-letters/{job_id}"): "test_dead_letters.py",
    ("DELETE", "/v1/admin/dead-letters/{job_id}"): "test_dead_letters.py",
    ("POST", "/v1/admin/dead-letters/{job_id}/redrive"): "test_dead_letters.py",
    ("POST", "/v1/admin/safety/jobs/{job_id}/{decision}"): "test_safety_http.py",
    ("POST", "/v1/admin/safety/appeals/{appeal_id}"): "test_safety_http.py",
    ("POST", "/v1/safety/appeals"): "test_safety_http.py",
    ("GET", "/v1/safety/appeals/{appeal_id}"): "test_safety_http.py",
    ("GET", "/v1/models/{model_id}"): "test_compat_auth.py (OpenAI's envelope)",
}
FACADE_PREFIXES = ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations")


def test_every_served_route_is_in_the_matrix(world: World) -> None:
    """A new route cannot ship without its row here (or a named suite that proves it)."""
    import re

    served = world.svc.services  # the app's own OpenAPI document lists every route
    with world.svc.client() as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert served is not None and paths
    missing = []
    for path, ops in paths.items():
        if path.startswith("/sdapi/") or path.startswith(FACADE_PREFIXES):
            continue  # facades: test_compat_auth.py, in their own envelopes
        pattern = re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$")
        for method in ops:
            key = (method.upper(), path)
            if key in COVERED_ELSEWHERE:
                continue
            if not any(r.method == key[0] and pattern.match(r.path) for r in ROUTES):
                missing.append(key)
    assert missing == []


@pytest.mark.parametrize(("route", "caller"), CASES, ids=[f"{r.name}|{c}" for r, c in CASES])
def test_matrix(world: World, route: Route, caller: str) -> None:
    want = expected(route, caller)
    with world.svc.client(headers=world.headers(caller)) as c:
        r = c.request(
            route.method,
            world.fill(route.path),
            json=world.fill(route.body) if route.body is not None else None,
        )
    assert r.status_code == want, f"{route.name} as {caller}: {r.status_code} {r.text[:300]}"
    if want >= 400:
        err = r.json()["error"]
        assert (
            err["type"]
            == {
                401: "unauthorized",
                403: "forbidden",
                404: "not_found",
                422: "validation_error",
            }[want]
        )
    if want == 422:  # another tenant's image id: "no stored image", like an unknown id
        assert r.json()["error"]["fields"][0]["field"] == "image_id"
    if want == 401:
        assert r.headers["www-authenticate"] == 'Bearer realm="sdserve"'
    if want == 403:
        assert route.need is not None and route.need.value in r.json()["error"]["message"]


def test_another_tenants_object_reads_exactly_like_a_missing_one(world: World) -> None:
    """The 404 for beta on acme's job says what a random id says: no existence leak."""
    with world.svc.client(headers=world.headers("beta:admin")) as c:
        random_id = "job_" + uuid.uuid4().hex
        theirs = c.get(f"/v1/jobs/{world.ids['job']}")
        unknown = c.get(f"/v1/jobs/{random_id}")
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json() == {
            "error": {"type": "not_found", "message": f"no job with id {world.ids['job']!r}"}
        }
        assert unknown.json()["error"]["message"] == f"no job with id {random_id!r}"
        img = c.get(f"/v1/images/{world.ids['image']}")
        missing = c.get(f"/v1/images/{uuid.uuid4().hex}.png")
        assert img.status_code == missing.status_code == 404


def test_lists_hold_only_the_callers_tenant(world: World) -> None:
    with world.svc.client(headers=world.headers("beta:user")) as c:
        mine = c.post("/v1/jobs", json=TINY).json()["id"]
        listed = {j["id"] for j in c.get("/v1/jobs?limit=200").json()["data"]}
    assert mine in listed and world.ids["job"] not in listed
    with world.svc.client(headers=world.headers("acme:reader")) as c:
        listed = {j["id"] for j in c.get("/v1/jobs?limit=200").json()["data"]}
    assert world.ids["job"] in listed and mine not in listed
    with world.svc.client(headers=world.headers("beta:admin")) as c:
        every = {j["id"]: j["tenant"] for j in c.get("/v1/admin/jobs?limit=200").json()["data"]}
        only_acme = c.get("/v1/admin/jobs?tenant=acme&limit=200").json()["data"]
    assert every[world.ids["job"]] == "acme" and every[mine] == "beta"
    assert {j["tenant"] for j in only_acme} == {"acme"}


def test_idempotency_keys_are_per_tenant(world: World) -> None:
    key = {"Idempotency-Key": "order-" + uuid.uuid4().hex}
    with world.svc.client(headers={**world.headers("acme:user"), **key}) as c:
        a1 = c.post("/v1/jobs", json=TINY)
        a2 = c.post("/v1/jobs", json=TINY)
    with world.svc.client(headers={**world.headers("beta:user"), **key}) as c:
        b1 = c.post("/v1/jobs", json=TINY)
    assert a1.json()["id"] == a2.json()["id"] and a2.headers["idempotent-replayed"] == "true"
    assert b1.status_code == 202 and b1.json()["id"] != a1.json()["id"]
    assert "idempotent-replayed" not in b1.headers


def test_uploaded_inputs_belong_to_their_tenant(world: World) -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(png, format="PNG")
    image = base64.b64encode(png.getvalue()).decode()
    body = {**TINY, "task": "img2img", "image": image, "strength": 1.0}
    with world.svc.client(headers=world.headers("acme:user")) as c:
        made = c.post("/v1/generate", json=body)
        assert made.status_code == 200, made.text
        input_id = made.json()["parameters"]["image"]
        assert c.get(f"/v1/images/{input_id}").status_code == 200
    with world.svc.client(headers=world.headers("beta:admin")) as c:
        assert c.get(f"/v1/images/{input_id}").status_code == 404
        reuse = c.post("/v1/jobs", json={**body, "image": None, "image_id": input_id})
        assert reuse.status_code == 422
        assert reuse.json()["error"]["fields"][0]["field"] == "image_id"


def test_x_api_key_works_and_other_schemes_do_not(world: World) -> None:
    key = world.keys["acme:reader"]
    url = world.svc.url + "/v1/models"
    assert httpx.get(url, headers={"X-API-Key": key}).status_code == 200
    for headers in (
        {"Authorization": f"Basic {base64.b64encode(key.encode()).decode()}"},
        {"Authorization": "Bearer"},
        {"Authorization": key},  # no scheme
        {"X-API-Key": ""},
    ):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Bearer")
    # A key in the query string is not a key (it would land in access logs).
    assert httpx.get(url, params={"api_key": key}).status_code == 401


def test_images_are_private_and_short_lived_in_caches(world: World) -> None:
    with world.svc.client(headers=world.headers("acme:reader")) as c:
        r = c.get(f"/v1/images/{world.ids['image']}")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "private, max-age=300"
    assert "immutable" not in r.headers["cache-control"]


def test_a_deleted_image_is_gone(world: World) -> None:
    with world.svc.client(headers=world.headers("acme:user")) as c:
        made = c.post("/v1/generate", json={**TINY, "seed": 99}).json()
        image = made["image_ids"][0]
        assert c.get(f"/v1/images/{image}").status_code == 200
        assert world.svc.services.blobs.delete(image, tenant="acme")
        assert c.get(f"/v1/images/{image}").status_code == 404


def test_live_image_ids_are_keyed_with_the_server_secret(world: World) -> None:
    from sdserve.domain.jobs import image_id
    from sdserve.domain.requests import OutputFormat
    from sdserve.security.server_key import ServerKey

    job, image = world.ids["job"], world.ids["image"]
    assert image == image_id(job, 0, OutputFormat.png, world.svc.services.server_key.image_key)
    other_deployment = ServerKey.ephemeral().image_key
    assert image != image_id(job, 0, OutputFormat.png, other_deployment)
