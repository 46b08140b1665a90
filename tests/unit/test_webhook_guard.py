"""The webhook address policy: blocked ranges, allowlist, URL validation.

No test here touches the network: names are resolved by a fake resolver (except
"localhost", which the system resolves from /etc/hosts).
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from sdserve.domain.errors import InvalidRequest
from sdserve.webhooks.guard import (
    AddressPolicy,
    DestinationRefused,
    Resolver,
    blocked_reason,
    parse_ip,
    validate_callback_url,
)

BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("169.254.169.254", "metadata"),
    ("169.254.1.1", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", ""),
    ("192.0.2.1", ""),  # documentation range
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fd00:ec2::254", "metadata"),
    ("fe80::1", "link-local"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "metadata"),
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ("2001:db8::1", ""),  # documentation
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize(("ip", "why"), BLOCKED)
def test_blocked_ranges(ip: str, why: str) -> None:
    reason = blocked_reason(ipaddress.ip_address(ip))
    assert reason is not None
    assert why in reason
    with pytest.raises(DestinationRefused, match="refused"):
        AddressPolicy().check_ip(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip: str) -> None:
    assert blocked_reason(ipaddress.ip_address(ip)) is None
    AddressPolicy().check_ip(ip)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("example.com", None),
    ],
)
def test_parse_ip_legacy_forms(text: str, expected: str | None) -> None:
    got = parse_ip(text)
    assert (str(got) if got else None) == expected


def test_allowlist_by_cidr() -> None:
    policy = AddressPolicy(["127.0.0.0/8", "10.1.0.0/16", "fd00::/8"])
    policy.check_ip("127.0.0.1")
    policy.check_ip("::ffff:127.0.0.1")  # the mapped form of an admitted address
    policy.check_ip("10.1.200.3")
    policy.check_ip("fd12::1")
    with pytest.raises(DestinationRefused):
        policy.check_ip("10.2.0.1")
    with pytest.raises(DestinationRefused):
        policy.check_ip("::1")


def test_metadata_needs_an_exact_allowlist_entry() -> None:
    broad = AddressPolicy(["169.254.0.0/16", "fd00::/8", "metadata.internal"])
    broad.check_ip("169.254.1.1")
    for ip in ("169.254.169.254", "fd00:ec2::254"):
        with pytest.raises(DestinationRefused, match="metadata"):
            broad.check_ip(ip)
        with pytest.raises(DestinationRefused):
            broad.check_ip(ip, host="metadata.internal")
    AddressPolicy(["169.254.169.254"]).check_ip("169.254.169.254")


def fake_resolver(table: dict[str, list[str]]) -> Resolver:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return table[host]

    return resolve


def test_allowlist_by_hostname() -> None:
    table = {"hooks.internal": ["10.0.0.7"], "other.internal": ["10.0.0.7"]}
    policy = AddressPolicy(["Hooks.Internal."], resolver=fake_resolver(table))
    assert policy.resolve_and_check("hooks.internal", 443) == [ipaddress.ip_address("10.0.0.7")]
    with pytest.raises(DestinationRefused, match=r"10\.0\.0\.7.*other\.internal"):
        policy.resolve_and_check("other.internal", 443)


def test_every_resolved_address_is_checked() -> None:
    # A mixed answer (public + private) is refused as a whole, not filtered.
    policy = AddressPolicy(resolver=fake_resolver({"mixed.example": ["8.8.8.8", "10.0.0.1"]}))
    with pytest.raises(DestinationRefused, match=r"10\.0\.0\.1"):
        policy.resolve_and_check("mixed.example", 80)


def test_resolve_dedupes_and_keeps_order() -> None:
    table = {"pub.example": ["8.8.8.8", "8.8.4.4", "8.8.8.8"]}
    policy = AddressPolicy(resolver=fake_resolver(table))
    assert [str(a) for a in policy.resolve_and_check("pub.example", 80)] == ["8.8.8.8", "8.8.4.4"]


def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    with pytest.raises(DestinationRefused, match="loopback"):
        AddressPolicy().resolve_and_check("localhost", 80)
    AddressPolicy(["localhost"]).resolve_and_check("localhost", 80)


# --- validate_callback_url ---------------------------------------------------------


def _problem(exc: pytest.ExceptionInfo[InvalidRequest]) -> str:
    [problem] = exc.value.problems
    assert problem.field == "callback_url"
    return problem.message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://example.com/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("https:///path", "host"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https://example.com:99999/", "valid URL"),
        ("https://exa mple.com/", "whitespace"),
        ("https://example.com/\r\nX-Evil: 1", "whitespace"),
        ("https://example.com/" + "a" * 2048, "too long"),
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://2130706433/hook", "loopback"),
        ("http://10.0.0.5/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://0.0.0.0/", "unspecified"),
    ],
)
def test_validate_rejects(url: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        validate_callback_url(url, AddressPolicy(resolver=fake_resolver({})))
    assert fragment in _problem(exc)
    assert exc.value.status == 422


def test_validate_localhost_is_refused_unless_allowlisted() -> None:
    with pytest.raises(InvalidRequest) as exc:
        validate_callback_url("http://localhost:9/hook", AddressPolicy())
    assert "loopback" in _problem(exc)
    validate_callback_url("http://localhost:9/hook", AddressPolicy(["localhost"]))


def test_validate_too_long_reports_limit() -> None:
    with pytest.raises(InvalidRequest) as exc:
        validate_callback_url("https://example.com/" + "a" * 2048, AddressPolicy())
    assert exc.value.problems[0].limit == 2048


def test_validate_accepts_public_and_allowlisted() -> None:
    policy = AddressPolicy(
        ["127.0.0.1"], resolver=fake_resolver({"hooks.example.com": ["93.184.215.14"]})
    )
    for url in (
        "https://hooks.example.com/cb?x=1",
        "HTTP://hooks.example.com:8443/cb",
        "http://127.0.0.1:8080/hook",
        "https://8.8.8.8/hook",
    ):
        assert validate_callback_url(url, policy) == url


def test_validate_hostname_resolving_private_is_refused() -> None:
    policy = AddressPolicy(resolver=fake_resolver({"evil.example": ["192.168.0.10"]}))
    with pytest.raises(InvalidRequest) as exc:
        validate_callback_url("https://evil.example/x", policy)
    assert "192.168.0.10" in _problem(exc)
    # Without resolution only the literal/shape checks run.
    validate_callback_url("https://evil.example/x", policy, resolve=False)


def test_validate_unresolvable_name_is_accepted() -> None:
    # DNS may be down at submit time; delivery re-checks (and retries) anyway.
    policy = AddressPolicy(resolver=fake_resolver({}))
    validate_callback_url("https://not-yet.example/x", policy)


BROAD_V6 = ["::/0", "::ffff:0:0/96", "64:ff9b::/96", "2002::/16"]


@pytest.mark.parametrize(
    "literal",
    [
        "::ffff:169.254.169.254",
        "::ffff:a9fe:a9fe",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "2002:0a00:0001::",
    ],
)
def test_broad_ipv6_allowlist_never_admits_embedded_private_ipv4(literal: str) -> None:
    policy = AddressPolicy(BROAD_V6)
    with pytest.raises(DestinationRefused):
        policy.check_ip(literal)
    with pytest.raises(InvalidRequest):
        validate_callback_url(f"http://[{literal}]/hook", policy)


def test_an_ipv4_entry_admits_its_address_in_any_spelling() -> None:
    policy = AddressPolicy(["10.0.0.0/8"])
    policy.check_ip("10.1.2.3")
    policy.check_ip("::ffff:10.1.2.3")
    policy.check_ip("64:ff9b::a01:203")
    with pytest.raises(DestinationRefused):
        policy.check_ip("::ffff:169.254.169.254")
