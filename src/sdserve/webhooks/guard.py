"""Where webhooks may go: an address policy against SSRF.

A callback URL is chosen by the client, so without a guard it is a way to make the
service POST into the operator's own network (loopback admin ports, RFC1918 hosts,
the cloud metadata endpoint). The policy refuses every address that is not publicly
routable unless the operator's allowlist admits it.

The check that matters is the one made on the address actually connected to
(see ``delivery.GuardedBackend``): a hostname is resolved once, every address it
resolves to is checked, and the connection goes to one of those checked addresses, so
a DNS answer that changes between "check" and "connect" (rebinding) cannot slip
through. ``validate_callback_url`` repeats the check at submit time only so the client
gets a clear 422 up front.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from sdserve.domain.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

MAX_URL_LENGTH = 2048
FIELD = "callback_url"

# Cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack v4, AWS IPv6). These hand
# out credentials, so a broad allowlist entry (a CIDR wider than the address itself, or
# a hostname) never admits them; only an entry naming the exact address does.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)

# NAT64 well-known prefix: the low 32 bits are an IPv4 address the translator reaches.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class DestinationRefused(Exception):
    """The destination is not allowed by the address policy. Permanent: retrying
    the same URL cannot succeed until the operator changes the allowlist."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if any (mapped ::ffff:a.b.c.d,
    6to4, Teredo, NAT64): a socket to such an address can land on that IPv4 host."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not publicly routable (None: it is). Pure; ignores any allowlist."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        reason = blocked_reason(inner)
        return f"{reason} (embedded in {ip})" if reason else None
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    # Order matters only for the message: the most specific category first.
    checks: list[tuple[bool, str]] = [
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "carrier-grade NAT"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        # Deny by default: anything the IANA registries do not call global
        # (documentation ranges, benchmarking, 192.0.0.0/24, ...).
        (not ip.is_global, "not globally routable"),
    ]
    for hit, name in checks:
        if hit:
            return name
    return None


def effective_ip(ip: IPAddress) -> IPAddress:
    """The address a connection really reaches: an IPv6 form that embeds an IPv4
    address (mapped, NAT64, 6to4, Teredo) stands for that IPv4 address. Every policy
    decision is made on this, so no IPv6 spelling slips past an IPv4 rule."""
    return embedded_ipv4(ip) or ip


def _normalize_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for TCP (may raise socket.gaierror)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_ip(text: str) -> IPAddress | None:
    """An IP literal, including the legacy IPv4 forms the C resolver accepts
    ("2130706433", "0x7f.1", "127.1") that ``ipaddress`` does not."""
    text = text.strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


class AddressPolicy:
    """Decides whether a destination may be connected to.

    ``allowlist`` entries are IPs/CIDRs ("127.0.0.1", "10.0.0.0/8") or hostnames
    ("hooks.internal"); a listed hostname admits whatever it resolves to (the
    operator trusts that name), a listed network admits the addresses inside it.
    """

    def __init__(self, allowlist: Iterable[str] = (), resolver: Resolver | None = None) -> None:
        self.networks: list[IPNetwork] = []
        self.hostnames: set[str] = set()
        for raw in allowlist:
            entry = raw.strip()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hostnames.add(_normalize_host(entry))
        self.resolver: Resolver = resolver or system_resolver

    def host_allowed(self, host: str) -> bool:
        return _normalize_host(host) in self.hostnames

    def _network_admits(self, ip: IPAddress) -> bool:
        """``ip`` is already effective (embedded IPv4 unwrapped), so only IPv4 entries
        admit an IPv4 destination: no IPv6 entry (``::/0``, ``::ffff:0:0/96``,
        ``64:ff9b::/96``, ``2002::/16``) opens a path to one, however it is spelt."""
        for net in self.networks:
            if ip.version != net.version or ip not in net:
                continue
            if ip in METADATA_ADDRESSES and net.num_addresses != 1:
                continue
            return True
        return False

    def check_ip(self, ip: IPAddress | str, host: str | None = None) -> None:
        """Raise DestinationRefused unless ``ip`` may be connected to. ``host`` is the
        name it was resolved from (for hostname allowlist entries and the message)."""
        addr = parse_ip(ip) if isinstance(ip, str) else ip
        if addr is None:
            raise DestinationRefused(f"{ip!r} is not an IP address")
        reason = blocked_reason(addr)
        effective = effective_ip(addr)
        if reason is None or self._network_admits(effective):
            return
        if host is not None and self.host_allowed(host) and effective not in METADATA_ADDRESSES:
            return
        via = f" (resolved from {host!r})" if host and parse_ip(host) is None else ""
        raise DestinationRefused(
            f"callback destination {addr}{via} is {reason}; refused "
            "(an operator can admit it with webhook_allowlist)"
        )

    def resolve_and_check(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` once and check EVERY address (one bad answer refuses the
        whole name, so a mixed public/private answer cannot be used to pick the
        private one). Returns the checked addresses, in resolver order, to connect
        to. Resolution errors (socket.gaierror) propagate: they are transient."""
        literal = parse_ip(host)
        if literal is not None:
            self.check_ip(literal, host)
            return [literal]
        addrs: list[IPAddress] = []
        for text in self.resolver(host, port):
            addr = parse_ip(text)
            if addr is None:
                raise DestinationRefused(f"{host!r} resolved to a non-IP answer {text!r}")
            if addr not in addrs:
                addrs.append(addr)
        if not addrs:
            raise socket.gaierror(socket.EAI_NONAME, f"{host!r} resolved to no address")
        for addr in addrs:
            self.check_ip(addr, host)
        return addrs


def validate_callback_url(url: str, policy: AddressPolicy, resolve: bool = True) -> str:
    """Check a client-supplied callback URL; returns it unchanged or raises
    InvalidRequest naming field "callback_url".

    Shape: http/https, a host, no userinfo, at most 2048 characters. Address: a
    literal IP must pass the policy; with ``resolve`` a hostname is resolved and every
    address must pass. A name that does not resolve right now is accepted (DNS may be
    briefly down; delivery re-checks and retries), and delivery re-checks everything
    anyway, since DNS answers can change after submit.
    """

    def bad(message: str) -> InvalidRequest:
        return InvalidRequest.single(FIELD, message)

    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest.single(FIELD, "URL is too long", limit=MAX_URL_LENGTH)
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise bad("URL must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(f"not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise bad("URL scheme must be http or https")
    if "@" in parts.netloc:
        raise bad("URL must not contain credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise bad("URL must have a host")
    if port is None:
        port = 443 if parts.scheme.lower() == "https" else 80
    try:
        literal = parse_ip(host)
        if literal is not None:
            policy.check_ip(literal, host)
        elif resolve:
            policy.resolve_and_check(host, port)
    except DestinationRefused as exc:
        raise bad(exc.reason) from None
    except (OSError, UnicodeError):
        pass  # does not resolve now; see the docstring
    return url
