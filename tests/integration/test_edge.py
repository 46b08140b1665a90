"""The HTTP edge: a request id on every response and log line, followed from the API's
log line to the worker's; W3C traceparent stored with the job and sent on webhooks;
CORS off unless configured; TLS through uvicorn's certificate settings."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sdserve.engine.fake import FakeEngine
from sdserve.observability.context import ContextFilter
from sdserve.observability.logs import JsonFormatter
from sdserve.queue.base import OutboxEntry
from sdserve.webhooks.delivery import DeliveryOutcome, WebhookDispatcher
from tests.integration.live import LiveService

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
GOOD = {"prompt": "a red circle", "width": 64, "height": 64, "num_inference_steps": 2}


class _Lines(logging.Handler):
    """Every record as the JSON line the service would write."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(ContextFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def json_lines() -> Iterator[_Lines]:
    handler = _Lines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_request_id_on_every_response(live_factory: Callable[..., LiveService]) -> None:
    svc = live_factory(max_body_bytes=2048, max_upload_bytes=4096)
    with svc.client() as c:
        responses = [
            c.get("/healthz"),
            c.get("/v1/jobs/nope"),
            c.post("/v1/jobs", json={"prompt": "a", "width": "64"}),
            c.post("/v1/jobs", content=b"x" * 9000, headers={"content-type": "application/json"}),
            c.put("/v1/jobs"),
        ]
        assert [r.status_code for r in responses] == [200, 404, 422, 413, 405]
        for r in responses:
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
        assert len({r.headers["x-request-id"] for r in responses}) == len(responses)
        # A sane client id is kept; anything else is replaced, never echoed.
        assert (
            c.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"]
            == "abc-123"
        )
        odd = c.get("/healthz", headers={"x-request-id": "<script>" + "x" * 300})
        assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["x-request-id"])


def test_request_id_followed_from_http_line_to_worker_line(
    live_factory: Callable[..., LiveService], json_lines: _Lines
) -> None:
    svc = live_factory()
    svc.start_workers(FakeEngine())
    headers = {"x-request-id": "req-follow-me-1", "traceparent": TRACEPARENT}
    with svc.client() as c:
        r = c.post("/v1/jobs", json=GOOD, headers=headers)
        assert r.status_code == 202
        job_id = r.json()["id"]
        assert r.json()["parameters"]["trace"] == {
            "request_id": "req-follow-me-1",
            "traceparent": TRACEPARENT,
        }
    svc.wait_status(job_id, {"succeeded"})
    http = [ln for ln in json_lines.lines if ln["logger"] == "sdserve.http"]
    mine = [ln for ln in http if ln.get("request_id") == "req-follow-me-1"]
    assert mine and mine[0]["job_id"] == job_id and "POST /v1/jobs -> 202" in mine[0]["msg"]
    assert mine[0]["trace_id"] == TRACEPARENT.split("-")[1]
    worker = [
        ln
        for ln in json_lines.lines
        if ln["logger"].startswith("sdserve.worker") and ln.get("job_id") == job_id
    ]
    assert len(worker) >= 2, json_lines.lines[-10:]
    for line in worker:
        assert line["request_id"] == "req-follow-me-1"
        assert line["traceparent"] == TRACEPARENT


def test_webhook_delivery_carries_the_jobs_traceparent(make_settings: Any) -> None:
    sent: list[dict[str, str]] = []

    class Sender:
        def send(self, url: str, body: bytes, headers: dict[str, str]) -> DeliveryOutcome:
            sent.append(headers)
            return DeliveryOutcome(True, 200)

    dispatcher = WebhookDispatcher(
        queue=None,  # type: ignore[arg-type]  # deliver() never touches the outbox
        sender=Sender(),  # type: ignore[arg-type]
        secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        settings=make_settings(),
    )
    payload = {"id": "j1", "parameters": {"trace": {"traceparent": TRACEPARENT}}}
    entry = OutboxEntry("e1", "j1", "https://example.com/hook", payload, 0, 0.0, 0.0)
    assert dispatcher.deliver(entry).ok
    untraced = OutboxEntry("e2", "j2", "https://example.com/hook", {"id": "j2"}, 0, 0.0, 0.0)
    assert dispatcher.deliver(untraced).ok
    assert sent[0]["traceparent"] == TRACEPARENT and "traceparent" not in sent[1]


def test_invalid_traceparent_is_not_stored(live_factory: Callable[..., LiveService]) -> None:
    svc = live_factory()
    with svc.client() as c:
        r = c.post("/v1/jobs", json=GOOD, headers={"traceparent": "00-" + "0" * 32 + "-x-01"})
    assert r.status_code == 202
    assert r.json()["parameters"]["trace"]["traceparent"] is None


def _preflight(svc: LiveService) -> httpx.Response:
    with svc.client() as c:
        return c.options(
            "/v1/jobs",
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )


def test_cors_is_off_by_default(live_factory: Callable[..., LiveService]) -> None:
    svc = live_factory()
    assert "access-control-allow-origin" not in _preflight(svc).headers
    with svc.client() as c:
        r = c.get("/healthz", headers={"origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_allows_configured_origins_only(live_factory: Callable[..., LiveService]) -> None:
    svc = live_factory(cors_origins=["https://app.example"])
    assert _preflight(svc).headers["access-control-allow-origin"] == "https://app.example"
    with svc.client() as c:
        other = c.get("/healthz", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_with_a_self_signed_certificate(
    live_factory: Callable[..., LiveService], tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    svc = live_factory(ssl_certfile=cert, ssl_keyfile=key)
    assert svc.url.startswith("https://")
    with httpx.Client(base_url=svc.url, verify=str(cert), timeout=30) as c:
        assert c.get("/healthz").status_code == 200
    with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
        httpx.get(f"{svc.url}/healthz", timeout=30)
    plain = svc.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):  # and no plain HTTP on the TLS port
        httpx.get(f"{plain}/healthz", timeout=30).raise_for_status()


def test_http_log_line_names_the_tenant(
    live_factory: Callable[..., LiveService], json_lines: _Lines
) -> None:
    from sdserve.security.keys import Role

    svc = live_factory(auth="on")
    key = svc.services.keys.create("alpha", Role.user).key
    with svc.client() as c:
        r = c.get("/v1/jobs", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    line = next(ln for ln in json_lines.lines if ln.get("request_id") == rid)
    assert line["tenant"] == "alpha" and key not in json.dumps(json_lines.lines)
