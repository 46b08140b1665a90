"""The external moderation adapter against a real HTTP server started by the test.

The server speaks the OpenAI moderation shape; each path plays one behaviour
(flagged, clean, slow, 500, garbage, wrong shape). Every failure must fail closed
(refused, ``error`` set, 503 on raise) unless fail-open is configured.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sdserve.config import Settings
from sdserve.domain.errors import ContentPolicyViolation, ModerationUnavailable
from sdserve.safety.builtin import BuiltinPolicy
from sdserve.safety.external import ExternalModerationPolicy
from sdserve.safety.factory import CombinedPolicy, OffPolicy, build_prompt_policy

SCORES = {
    "sexual": 0.01,
    "sexual/minors": 0.0,
    "harassment": 0.02,
    "harassment/threatening": 0.0,
    "hate": 0.0,
    "hate/threatening": 0.0,
    "illicit": 0.0,
    "illicit/violent": 0.0,
    "self-harm": 0.0,
    "self-harm/intent": 0.0,
    "self-harm/instructions": 0.0,
    "violence": 0.03,
    "violence/graphic": 0.0,
}


def moderation(scores: dict[str, float], threshold: float = 0.5) -> dict[str, Any]:
    flags = {k: v >= threshold for k, v in scores.items()}
    return {
        "id": "modr-1",
        "model": "omni-moderation-latest",
        "results": [
            {"flagged": any(flags.values()), "categories": flags, "category_scores": scores}
        ],
    }


ANSWERS: dict[str, tuple[int, bytes]] = {
    "/clean": (200, json.dumps(moderation(SCORES)).encode()),
    "/flagged": (
        200,
        json.dumps(moderation(SCORES | {"violence/graphic": 0.97, "violence": 0.6})).encode(),
    ),
    "/selfharm": (200, json.dumps(moderation(SCORES | {"self-harm/intent": 0.91})).encode()),
    "/minors": (200, json.dumps(moderation(SCORES | {"sexual/minors": 0.88})).encode()),
    "/unmapped": (200, json.dumps(moderation(SCORES | {"illicit": 0.99})).encode()),
    "/flags-only": (
        200,
        json.dumps({"results": [{"flagged": True, "categories": {"hate": True}}]}).encode(),
    ),
    "/error500": (500, b'{"error": {"message": "internal"}}'),
    "/error429": (429, b'{"error": {"message": "rate limited"}}'),
    "/garbage": (200, b"<html>not json at all"),
    "/wrong-shape": (200, b'{"data": [{"flagged": false}]}'),
    "/empty-results": (200, b'{"results": []}'),
    "/bad-score": (200, json.dumps(moderation(SCORES | {"violence": 7.0})).encode()),
    "/string-flag": (200, b'{"results": [{"flagged": "maybe"}]}'),
}


@dataclass
class Server:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            seen.append(
                {
                    "path": self.path,
                    "body": json.loads(body or b"null"),
                    "auth": self.headers.get("authorization"),
                    "type": self.headers.get("content-type"),
                }
            )
            if self.path == "/slow":
                time.sleep(1.0)
                status, payload = ANSWERS["/clean"]
            else:
                status, payload = ANSWERS[self.path]
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except BrokenPipeError:  # /slow: the client gave up, as it should
                pass

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", seen)
    finally:
        httpd.shutdown()
        httpd.server_close()


def policy(server: Server, path: str, **kwargs: Any) -> ExternalModerationPolicy:
    kwargs.setdefault("timeout", 0.3)
    return ExternalModerationPolicy(server.url + path, **kwargs)


def test_clean_prompt_is_approved_and_request_is_openai_shaped(server: Server) -> None:
    p = policy(server, "/clean", api_key="sk-test", model="omni-moderation-latest")
    decision = p.check("a red circle", "nsfw, nude")
    assert decision.approved and decision.error is None
    assert decision.source == "external"
    assert decision.categories == {
        "adult": 0.01,
        "hate": 0.02,
        "self-harm": 0.0,
        "violence": 0.03,
    }
    sent = server.requests[-1]
    assert sent["body"] == {"input": "a red circle", "model": "omni-moderation-latest"}
    assert sent["auth"] == "Bearer sk-test"
    assert sent["type"] == "application/json"


def test_no_key_sends_no_authorization(server: Server) -> None:
    policy(server, "/clean").check("a cat")
    assert server.requests[-1]["auth"] is None
    assert server.requests[-1]["body"] == {"input": "a cat"}


def test_flagged_prompt_is_refused_with_mapped_category(server: Server) -> None:
    decision = policy(server, "/flagged").check("something violent")
    assert not decision.approved and decision.error is None
    assert decision.flagged == ["violence"]
    assert decision.categories["violence"] == 0.97  # the highest sub-category wins
    assert decision.confidence == 0.97
    with pytest.raises(ContentPolicyViolation) as info:
        decision.raise_if_refused()
    assert info.value.as_dict()["categories"]["violence"] == 0.97


@pytest.mark.parametrize(("path", "category"), [("/selfharm", "self-harm"), ("/minors", "adult")])
def test_sub_categories_map_onto_ours(server: Server, path: str, category: str) -> None:
    assert policy(server, path).check("x").flagged == [category]


def test_our_threshold_decides_not_theirs(server: Server) -> None:
    # /flagged: violence/graphic 0.97 (their flag at 0.5); /clean: violence 0.03.
    assert policy(server, "/flagged", threshold=0.98).check("x").approved
    assert not policy(server, "/flagged").check("x", threshold=0.9).approved
    assert policy(server, "/clean").check("x", threshold=0.05).approved
    assert not policy(server, "/clean").check("x", threshold=0.03).approved


def test_flag_without_score_counts_as_one(server: Server) -> None:
    decision = policy(server, "/flags-only").check("x")
    assert decision.flagged == ["hate"] and decision.categories["hate"] == 1.0


def test_unmapped_categories_are_logged_not_scored(server: Server) -> None:
    decision = policy(server, "/unmapped").check("x")
    assert decision.approved
    assert decision.matches == {"unmapped": ["illicit"]}


FAILURES = [
    ("/slow", "timed out"),
    ("/error500", "HTTP 500"),
    ("/error429", "HTTP 429"),
    ("/garbage", "not in the moderation shape"),
    ("/wrong-shape", "results"),
    ("/empty-results", "results"),
    ("/bad-score", "not in [0, 1]"),
    ("/string-flag", "flagged"),
]


@pytest.mark.parametrize(("path", "problem"), FAILURES)
def test_failures_fail_closed(server: Server, path: str, problem: str) -> None:
    started = time.monotonic()
    decision = policy(server, path).check("a cat")
    assert time.monotonic() - started < 0.9  # the timeout, not the server, ended it
    assert not decision.approved
    assert decision.error is not None and problem in decision.error
    assert decision.categories == {}
    assert "retry" in decision.reason and problem not in decision.reason
    with pytest.raises(ModerationUnavailable) as info:
        decision.raise_if_refused()
    assert info.value.status == 503


@pytest.mark.parametrize(("path", "problem"), FAILURES)
def test_failures_fail_open_when_configured(server: Server, path: str, problem: str) -> None:
    decision = policy(server, path, fail_open=True).check("a cat")
    assert decision.approved
    assert decision.error is not None and problem in decision.error
    decision.raise_if_refused()  # approved: nothing raised


def test_unreachable_service_fails_closed() -> None:
    from sdserve.testing import free_port

    decision = ExternalModerationPolicy(
        f"http://127.0.0.1:{free_port()}/v1/moderations", timeout=0.5
    ).check("a cat")
    assert not decision.approved and "request failed" in (decision.error or "")


def test_combined_policy_runs_builtin_first(server: Server) -> None:
    combined = CombinedPolicy(BuiltinPolicy.load(), policy(server, "/flagged"))
    before = len(server.requests)
    refused = combined.check("a pornographic scene")
    assert refused.source == "builtin" and refused.flagged == ["adult"]
    assert len(server.requests) == before  # the service never saw it
    second = combined.check("a quiet street")  # built-in approves, service flags
    assert second.source == "external" and second.flagged == ["violence"]
    both = CombinedPolicy(BuiltinPolicy.load(), policy(server, "/clean")).check("a bloody scene")
    assert both.approved and both.source == "builtin+external"
    assert both.categories["violence"] == 0.35  # max of built-in 0.35 and service 0.03
    failing = CombinedPolicy(BuiltinPolicy.load(), policy(server, "/error500")).check("a cat")
    assert not failing.approved and failing.error is not None


def test_factory_builds_what_settings_name(server: Server) -> None:
    assert isinstance(build_prompt_policy(Settings(prompt_policy="off")), OffPolicy)
    assert OffPolicy().check("anything at all").approved
    assert isinstance(build_prompt_policy(Settings()), BuiltinPolicy)
    external = build_prompt_policy(
        Settings(
            prompt_policy="external",
            moderation_url=server.url + "/flagged",
            moderation_timeout_seconds=0.3,
            prompt_policy_threshold=0.5,
        )
    )
    assert isinstance(external, ExternalModerationPolicy)
    assert external.threshold == 0.5 and external.client.timeout.read == 0.3
    both = build_prompt_policy(
        Settings(
            prompt_policy="both", moderation_url=server.url + "/error500", moderation_fail_open=True
        )
    )
    assert isinstance(both, CombinedPolicy)
    assert both.check("a cat").approved  # fail-open carried through
    with pytest.raises(ValueError, match="SDSERVE_MODERATION_URL"):
        build_prompt_policy(Settings(prompt_policy="external"))
