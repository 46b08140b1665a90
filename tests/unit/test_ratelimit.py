"""The rate limiter over limits' memory and Redis storage: exactly the limit is
admitted under concurrency (two limiters on one Redis stand for two API processes),
a refusal charges nothing, and quota settings are checked at start-up."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from sdserve.config import Settings
from sdserve.security.ratelimit import (
    Charge,
    Quota,
    QuotaPolicy,
    RateLimiter,
    build_limiter,
    memory_limiter,
    parse_rate,
)


def _redis_limiter(redis_url: str, redis_prefix: str) -> RateLimiter:
    settings = Settings(queue_backend="redis", redis_url=redis_url, redis_prefix=redis_prefix)
    return build_limiter(settings)


@pytest.fixture(params=["memory", "redis"])
def limiters(request: pytest.FixtureRequest) -> list[RateLimiter]:
    if request.param == "memory":
        return [memory_limiter()]
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return [_redis_limiter(url, prefix), _redis_limiter(url, prefix)]


def _hammer(limiters: list[RateLimiter], charges: Callable[[], list[Charge]], n: int) -> int:
    admitted = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        ok = limiters[i % len(limiters)].acquire(charges()) is None
        with lock:
            admitted.append(ok)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(admitted)


def test_admits_exactly_the_limit_under_concurrency(limiters: list[RateLimiter]) -> None:
    item = parse_rate("requests", "7/hour")
    assert item is not None
    assert _hammer(limiters, lambda: [Charge("requests", item, "k1", 1)], 40) == 7
    # Another identity is counted apart and gets its full limit.
    assert _hammer(limiters, lambda: [Charge("requests", item, "k2", 1)], 10) == 7


def test_a_refusal_charges_no_other_limit(limiters: list[RateLimiter]) -> None:
    requests, images = parse_rate("r", "10/hour"), parse_rate("i", "5/day")
    assert requests is not None and images is not None
    lim = limiters[-1]

    def both(cost: int) -> list[Charge]:
        return [Charge("requests", requests, "k", 1), Charge("images", images, "k", cost)]

    assert lim.acquire(both(4)) is None
    refusal = lim.acquire(both(2))
    assert refusal is not None and refusal.name == "images" and refusal.remaining == 1
    assert 1 <= refusal.retry_after() <= 86400
    assert lim.remaining(both(1)[0])[0] == 9  # the refused request was not counted
    assert lim.acquire(both(1)) is None
    taken = both(0)
    lim.refund(taken[:1])
    assert lim.remaining(taken[0])[0] == 9  # given back


def test_policy_defaults_and_overrides() -> None:
    settings = Settings(
        quota_requests="60/minute",
        quota_max_steps=30,
        quota_overrides={
            "tenant:acme": {"requests": "600/minute", "max_queued": 4},
            "key:abc": {"images": "10/day", "max_steps": 0},
        },
    )
    policy = QuotaPolicy.from_settings(settings)
    base = policy.for_caller("other", "xyz")
    assert base.requests is not None and base.requests.amount == 60 and base.max_steps == 30
    acme = policy.for_caller("acme", "abc")
    assert acme.requests is not None and acme.requests.amount == 600
    assert acme.max_queued == 4 and acme.max_steps == 0
    assert acme.images is not None and acme.images.amount == 10
    assert policy.for_caller(None, None) == base


@pytest.mark.parametrize(
    ("overrides", "requests", "message"),
    [
        ({}, "lots", "quota requests: 'lots' is not a rate"),
        ({}, "0/minute", "quota requests: '0/minute' is not a rate"),
        ({"acme": {"requests": "1/minute"}}, "", "expected 'tenant:<name>' or 'key:<id>'"),
        ({"tenant:a": {"speed": 1}}, "", "unknown field 'speed'"),
        ({"tenant:a": {"max_queued": -1}}, "", "tenant:a.max_queued: must be an integer >= 0"),
        ({"key:k": {"images": "x/day"}}, "", "quota key:k.images: 'x/day' is not a rate"),
    ],
)
def test_bad_quota_settings_are_refused_with_the_setting_named(
    overrides: dict[str, dict[str, str | int]], requests: str, message: str
) -> None:
    settings = Settings(quota_requests=requests, quota_overrides=overrides)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        QuotaPolicy.from_settings(settings)


def test_no_quota_is_no_limit() -> None:
    assert QuotaPolicy.from_settings(Settings()).default == Quota()
