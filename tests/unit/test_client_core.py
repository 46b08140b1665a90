"""The client core's pure decisions: Retry-After parsing, back-off bounds, which
failures are retried, the SSE decoder, and the facades' shared error description."""

from __future__ import annotations

import email.utils
import random

import httpx
import pytest

from sdserve.client._core import Core, RetryPolicy, retry_after_seconds
from sdserve.client.errors import InvalidRequestError, ServerError, error_for
from sdserve.client.sse import Event, SSEDecoder


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    assert retry_after_seconds("-4") == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_seconds(date, now=1_000_000) == 30.0


def test_backoff_grows_with_jitter_inside_its_bounds() -> None:
    policy, rng = RetryPolicy(backoff=0.5, max_backoff=4.0), random.Random(1)
    for attempt, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 4.0]):
        delays = {policy.backoff_delay(attempt, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1


def _response(code: int, **headers: str) -> httpx.Response:
    return httpx.Response(code, headers=headers)


@pytest.mark.parametrize(
    ("code", "headers", "retried"),
    [
        (429, {"retry-after": "2"}, 2.0),
        (503, {}, True),
        (502, {}, True),
        (504, {}, True),
        (500, {}, None),
        (422, {}, None),
        (429, {"retry-after": "600"}, None),  # longer than max_retry_after: raise
    ],
)
def test_which_statuses_are_retried(code: int, headers: dict[str, str], retried: object) -> None:
    core = Core.build("http://x", None, 5, retries=3, backoff=0.5)
    delay = core.delay_after(0, _response(code, **headers), None)
    if retried is None:
        assert delay is None
    elif retried is True:
        assert delay is not None and 0.25 <= delay <= 0.5
    else:
        assert delay == retried
    assert core.delay_after(3, _response(503), None) is None  # out of retries


def test_only_connect_errors_are_retried() -> None:
    core = Core.build("http://x", None, 5, retries=3, backoff=0.5)
    assert core.delay_after(0, None, httpx.ConnectError("refused")) is not None
    assert core.delay_after(0, None, httpx.ConnectTimeout("slow")) is not None
    assert core.delay_after(0, None, httpx.ReadTimeout("busy")) is None


def test_every_post_gets_an_idempotency_key() -> None:
    a, b = Core.headers_for("POST", None), Core.headers_for("post", None)
    assert a["Idempotency-Key"] != b["Idempotency-Key"]
    assert Core.headers_for("POST", "mine") == {"Idempotency-Key": "mine"}
    assert Core.headers_for("GET", None) == {}


def test_typed_errors() -> None:
    body = {"error": {"type": "validation_error", "message": "m", "fields": [{"field": "n"}]}}
    err = error_for(422, body, {})
    assert isinstance(err, InvalidRequestError) and err.fields == [{"field": "n"}]
    assert isinstance(error_for(503, {}, {}), ServerError)
    odd = error_for(418, {"error": "teapot"}, {})
    assert odd.status == 418 and odd.message == "teapot"


def test_sse_decoder() -> None:
    dec = SSEDecoder()
    lines = [": keep-alive", "", "event: job", 'data: {"a":', "data: 1}", "", "data: x", ""]
    events = [e for e in (dec.feed(line) for line in lines) if e is not None]
    assert events == [Event("job", '{"a":\n1}'), Event("message", "x")]


def test_facade_error_description() -> None:
    from fastapi.exceptions import RequestValidationError

    from sdserve.api.facade_common import describe, renamed
    from sdserve.domain.errors import InvalidRequest, QueueFull

    facts = describe(QueueFull("busy"))
    assert (facts.status, facts.type, facts.retryable) == (503, "queue_full", True)
    bad = renamed(
        InvalidRequest.single("num_inference_steps", "too many", 150),
        {"num_inference_steps": "steps"},
    )
    assert describe(bad).param == "steps" and describe(bad).problems[0].limit == 150
    pyd = RequestValidationError([{"loc": ("body", "n"), "msg": "bad", "type": "x"}])
    assert describe(pyd).param == "n" and describe(pyd).status == 422
    assert describe(RuntimeError("boom")).type == "internal_error"


def test_progress_line_completes_the_bar_when_the_last_steps_came_with_the_result() -> None:
    import io

    from sdserve.client.progress import ProgressLine

    out = io.StringIO()
    line = ProgressLine(out)
    for view in (
        {"status": "queued", "queue_position": 0},
        {"status": "running", "progress": {"step": 1, "total": 6}},
        {"status": "running", "progress": {"step": 5, "total": 6}},
        {"status": "succeeded", "progress": {"step": 5, "total": 6}},
    ):
        line(view)
    lines = out.getvalue().splitlines()
    assert lines[0] == "queued, position 1"
    assert lines[-2].endswith("step 6/6") and lines[-1] == "succeeded"
    assert [ln.endswith("step 5/6") for ln in lines].count(True) == 1


def test_progress_line_does_not_fake_steps_of_a_failed_job() -> None:
    import io

    from sdserve.client.progress import ProgressLine

    out = io.StringIO()
    line = ProgressLine(out)
    line({"status": "running", "progress": {"step": 2, "total": 6}})
    line({"status": "failed"})
    assert out.getvalue().splitlines()[-2:] == [
        "[##########....................] step 2/6",
        "failed",
    ]
