"""Malformed requests across every route (plain data, replayed over HTTP by
tests/integration/test_malformed_corpus.py). Every case must get a 4xx in the
documented error shape; none may get a 5xx.

Bodies are raw bytes so the corpus can carry what a JSON encoder would never write:
NaN/Infinity literals, 400-digit numbers, invalid UTF-8, 10,000-deep nesting.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

# A well-formed generation body; each case breaks one thing about it.
GOOD = {"prompt": "a red circle", "width": 64, "height": 64, "num_inference_steps": 2}
HUGE = "x" * 1_000_000  # a 10^6-character field
JSON_TYPE = {"content-type": "application/json"}


@dataclass(frozen=True)
class Req:
    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    role: str = "user"  # which key sends it: user, admin, or none (headers say all)
    chunked: bool = False  # send the body without Content-Length


def _raw(value: str) -> bytes:
    return value.encode()


def _with(field_name: str, literal: str, base: dict[str, object] | None = None) -> bytes:
    """GOOD (or ``base``) with one field set to a raw JSON literal."""
    fields = {k: json.dumps(v) for k, v in (base or GOOD).items()}
    fields[field_name] = literal
    return _raw("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}")


INT_FIELDS = [
    "width",
    "height",
    "num_inference_steps",
    "seed",
    "num_images",
    "mask_blur",
    "noise_level",
]
FLOAT_FIELDS = ["guidance_scale", "strength"]
STR_FIELDS = [
    "prompt",
    "negative_prompt",
    "scheduler",
    "model",
    "priority",
    "output_format",
    "task",
    "image_id",
    "mask_id",
]
BAD_INT = {
    "string": '"64"',
    "true": "true",
    "false": "false",
    "fraction": "1.5",
    "nan": "NaN",
    "inf": "Infinity",
    "2^64": str(2**64),
    "400 digits": "9" * 400,
    "negative": "-1",
    "list": "[64]",
    "object": '{"v": 64}',
}
BAD_FLOAT = {
    "string": '"7.5"',
    "true": "true",
    "nan": "NaN",
    "inf": "Infinity",
    "-inf": "-Infinity",
    "1e400": "1e400",
    "huge": "9" * 400,
    "list": "[7.5]",
    "negative": "-5",
}
BAD_STR = {"number": "123", "true": "true", "list": '["a"]', "object": '{"a": 1}'}


def _field_cases(path: str) -> Iterator[Req]:
    for f in INT_FIELDS:
        for label, lit in BAD_INT.items():
            yield Req(f"{path} {f}={label}", "POST", path, _with(f, lit), JSON_TYPE)
    for f in FLOAT_FIELDS:
        for label, lit in BAD_FLOAT.items():
            yield Req(f"{path} {f}={label}", "POST", path, _with(f, lit), JSON_TYPE)
    for f in STR_FIELDS:
        for label, lit in BAD_STR.items():
            yield Req(f"{path} {f}={label}", "POST", path, _with(f, lit), JSON_TYPE)
    for f in ("prompt", "negative_prompt", "image", "model", "scheduler", "image_id"):
        yield Req(f"{path} {f}=10^6 chars", "POST", path, _with(f, json.dumps(HUGE)), JSON_TYPE)
    yield Req(f"{path} unknown field", "POST", path, _with("wdith", "64"), JSON_TYPE)
    yield Req(f"{path} empty prompt", "POST", path, _with("prompt", '""'), JSON_TYPE)
    yield Req(f"{path} width 63", "POST", path, _with("width", "63"), JSON_TYPE)
    yield Req(f"{path} width 2^31", "POST", path, _with("width", str(2**31)), JSON_TYPE)
    yield Req(f"{path} bad base64", "POST", path, _img2img("!!!not base64!!!"), JSON_TYPE)
    yield Req(f"{path} base64 of junk", "POST", path, _img2img(_b64(b"junk" * 10)), JSON_TYPE)
    yield Req(f"{path} traversal image_id", "POST", path, _img2img_id("../../etc/passwd"))
    yield Req(f"{path} callback to metadata", "POST", path, _callback(path))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _img2img(image: str) -> bytes:
    return json.dumps({**GOOD, "task": "img2img", "image": image, "strength": 0.5}).encode()


def _img2img_id(ident: str) -> bytes:
    return json.dumps({**GOOD, "task": "img2img", "image_id": ident, "strength": 0.5}).encode()


def _callback(path: str) -> bytes:
    if path != "/v1/jobs":  # only jobs take callback_url; elsewhere it is an unknown field
        return json.dumps({**GOOD, "callback_url": "http://127.0.0.1/x"}).encode()
    return json.dumps({**GOOD, "callback_url": "http://[::ffff:169.254.169.254]/x"}).encode()


def _body_cases(path: str) -> Iterator[Req]:
    bodies = {
        "empty": b"",
        "null": b"null",
        "list": b"[]",
        "number": b"42",
        "string": b'"prompt"',
        "truncated": b'{"prompt": "a red',
        "trailing comma": b'{"prompt": "a",}',
        "single quotes": b"{'prompt': 'a'}",
        "deep list": b"[" * 10_000 + b"]" * 10_000,
        "deep object": b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        "bad utf-8": b'{"prompt": "\xff\xfe\xc3\x28"}',
        "lone surrogate": b'{"prompt": "\\ud800"}',
        "nul bytes": b'{"prompt": "a\x00b"}',
        "bom": b"\xef\xbb\xbf" + json.dumps(GOOD).encode(),
        "duplicate keys": b'{"width": 64, "width": "64", "prompt": "a"}',
        "utf-16": json.dumps(GOOD).encode("utf-16"),
    }
    for label, raw in bodies.items():
        yield Req(f"{path} body {label}", "POST", path, raw, JSON_TYPE)
    odd_types = ["text/plain", "application/xml", "application/x-www-form-urlencoded", "image/png"]
    for ctype in odd_types:
        yield Req(
            f"{path} content-type {ctype}",
            "POST",
            path,
            json.dumps(GOOD).encode(),
            {"content-type": ctype},
        )
    yield Req(
        f"{path} multipart without boundary",
        "POST",
        path,
        b"--x\r\n",
        {"content-type": "multipart/form-data"},
    )
    yield Req(
        f"{path} multipart garbage",
        "POST",
        path,
        b"--b\r\nContent-Disposition: form-data; name=width\r\n\r\nabc\r\n--b--\r\n",
        {"content-type": "multipart/form-data; boundary=b"},
    )
    yield Req(
        f"{path} oversized body",
        "POST",
        path,
        b'{"prompt": "' + b"a" * 3_000_000 + b'"}',
        JSON_TYPE,
    )
    yield Req(
        f"{path} oversized chunked body",
        "POST",
        path,
        b'{"prompt": "' + b"a" * 3_000_000 + b'"}',
        JSON_TYPE,
        chunked=True,
    )
    yield Req(
        f"{path} chunked bad json", "POST", path, b'{"prompt": ' * 50, JSON_TYPE, chunked=True
    )


TRAVERSAL_IDS = {
    "dotdot": "..%2F..%2Fetc%2Fpasswd",
    "long": "j" * 10_000,
    "nul": "abc%00def",
    "unicode": "%E2%80%AE%F0%9F%98%80",
    "bad utf-8": "%FF%FE",
    "encoded slash": "a%2Fb",
    "spaces": "%20%20",
    "sql": "1%27%20OR%20%271%27%3D%271",
}
ID_ROUTES = [
    ("GET", "/v1/jobs/{id}", "user"),
    ("DELETE", "/v1/jobs/{id}", "user"),
    ("GET", "/v1/jobs/{id}/events", "user"),
    ("GET", "/v1/images/{id}", "user"),
    ("GET", "/v1/images/{id}.png", "user"),
    ("GET", "/v1/workflows/{id}", "user"),
    ("DELETE", "/v1/workflows/{id}", "user"),
    ("GET", "/v1/workflows/{id}/events", "user"),
    ("GET", "/v1/admin/keys/{id}", "admin"),
    ("DELETE", "/v1/admin/keys/{id}", "admin"),
    ("GET", "/v1/admin/jobs/{id}", "admin"),
    ("DELETE", "/v1/admin/jobs/{id}", "admin"),
]


def _id_cases() -> Iterator[Req]:
    for method, template, role in ID_ROUTES:
        for label, ident in TRAVERSAL_IDS.items():
            path = template.replace("{id}", ident)
            yield Req(f"{method} {template} id={label}", method, path, role=role)


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _query_cases() -> Iterator[Req]:
    queries: dict[str, dict[str, str]] = {
        "cursor 2^63": {"cursor": _cursor(f"s:{2**63}")},
        "cursor 2^64": {"cursor": _cursor(f"s:{2**64}")},
        "cursor negative": {"cursor": _cursor("s:-1")},
        "cursor garbage": {"cursor": "!!!"},
        "cursor not base64 text": {"cursor": _cursor("\xff") + "\u00e9"},
        "cursor long": {"cursor": "A" * 10_000},
        "limit 0": {"limit": "0"},
        "limit huge": {"limit": "9" * 40},
        "limit text": {"limit": "ten"},
        "limit nan": {"limit": "NaN"},
        "status bogus": {"status": "exploded"},
        "priority bogus": {"priority": "urgent"},
    }
    for path, role in (("/v1/jobs", "user"), ("/v1/admin/jobs", "admin")):
        for label, params in queries.items():
            yield Req(f"GET {path} {label}", "GET", path, params=params, role=role)
    yield Req(
        "admin jobs tenant long",
        "GET",
        "/v1/admin/jobs",
        params={"tenant": "t" * 5000},
        role="admin",
    )


def _header_cases() -> Iterator[Req]:
    body = json.dumps(GOOD).encode()
    auths = {
        "bare bearer": "Bearer",
        "basic": "Basic dXNlcjpwYXNz",
        "garbage key": "Bearer sk-not-a-key",
        "long key": "Bearer sk-" + "a" * 10_000,
        "three parts wrong": "Bearer sk-abc-def-ghi",
        "no scheme": "sk-abc-def",
        "unicode-ish": "Bearer sk-%C3%A9-%C3%A9",
    }
    for label, value in auths.items():
        for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/admin/keys")):
            yield Req(
                f"{method} {path} authorization {label}",
                method,
                path,
                body if method == "POST" else None,
                {"authorization": value, **JSON_TYPE},
                role="none",
            )
    bad_keys = {"long": "k" * 10_000, "empty": "", "spaces": "a  b"}
    for label, key in bad_keys.items():
        yield Req(
            f"idempotency key {label}",
            "POST",
            "/v1/jobs",
            _with("width", '"64"'),
            {"idempotency-key": key, **JSON_TYPE},
        )
    yield Req(
        "odd accept",
        "POST",
        "/v1/jobs",
        _with("width", "true"),
        {"accept": "image/*;q=0, */*;q=nope", **JSON_TYPE},
    )
    yield Req(
        "odd request id",
        "POST",
        "/v1/jobs",
        _with("width", "true"),
        {"x-request-id": "<script>" + "x" * 500, **JSON_TYPE},
    )


def _admin_body_cases() -> Iterator[Req]:
    cases = {
        ("POST", "/v1/admin/keys"): [
            b"{}",
            b'{"tenant": 5}',
            b'{"tenant": "a", "role": "god"}',
            b'{"tenant": "' + b"t" * 100 + b'"}',
            b'{"tenant": "a", "expires_in_seconds": -1}',
            b'{"tenant": "a", "expires_in_seconds": 1e400}',
            b'{"tenant": "a", "expires_in_seconds": NaN}',
            b'{"tenant": "a", "extra": 1}',
            b"[" * 5000 + b"]" * 5000,
            b'{"tenant": "\xff"}',
        ],
        ("POST", "/v1/admin/keys/nokey/rotate"): [b'{"overlap_seconds": -5}'],
        ("PUT", "/v1/admin/tenants/gamma/webhook-secret"): [
            b'{"secret": 5}',
            b'{"secret": "' + b"s" * 500 + b'"}',
            b"not json",
        ],
    }
    for (method, path), bodies in cases.items():
        for i, raw in enumerate(bodies):
            yield Req(f"{method} {path} #{i}", method, path, raw, JSON_TYPE, role="admin")


def _workflow_cases() -> Iterator[Req]:
    path = "/v1/workflows"
    bodies = {
        "no steps": b"{}",
        "empty steps": b'{"steps": []}',
        "steps not list": b'{"steps": {"prompt": "a"}}',
        "step width string": json.dumps({"steps": [{**GOOD, "width": "64"}]}).encode(),
        "step steps true": json.dumps({"steps": [{**GOOD, "num_inference_steps": True}]}).encode(),
        "step nan": b'{"steps": [{"prompt": "a", "guidance_scale": NaN}]}',
        "many steps": json.dumps({"steps": [GOOD] * 1000}).encode(),
        "deep steps": b'{"steps": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "traversal image id": json.dumps({"image_id": "../x", "steps": [GOOD]}).encode(),
    }
    for label, raw in bodies.items():
        yield Req(f"workflow {label}", "POST", path, raw, JSON_TYPE)


def _method_cases() -> Iterator[Req]:
    for method, path in (
        ("PUT", "/v1/jobs"),
        ("PATCH", "/v1/jobs/x"),
        ("POST", "/v1/models"),
        ("DELETE", "/healthz"),
        ("GET", "/v1/generate"),
        ("GET", "/v1/nope"),
        ("GET", "/../../etc/passwd"),
    ):
        yield Req(f"{method} {path}", method, path)


def corpus() -> list[Req]:
    out: list[Req] = []
    for path in ("/v1/jobs", "/v1/generate"):
        out.extend(_field_cases(path))
        out.extend(_body_cases(path))
    out.extend(_workflow_cases())
    out.extend(_id_cases())
    out.extend(_query_cases())
    out.extend(_header_cases())
    out.extend(_admin_body_cases())
    out.extend(_method_cases())
    return out
