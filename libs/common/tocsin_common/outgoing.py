"""Where outgoing requests may go: a pure decision on a resolved address and port.

Every outgoing HTTP request Tocsin makes on a user's behalf (webhook, Slack, Teams and
Twilio pages; automation actions) goes to an address taken from configuration or from an
alert. Without a check, such an address can reach what only the host should: the cloud
metadata service (169.254.169.254), a database on localhost, an admin port on the private
network. So by default every address that is not globally routable is refused: loopback,
private (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10), unspecified, multicast,
shared (CGNAT 100.64/10), reserved and documentation ranges, and the IPv6 forms that carry
one of those IPv4 addresses (::ffff:127.0.0.1, 64:ff9b::/96, 2002::/16).

An allow-list lets some through: entries are an address or CIDR network, optionally with a
port (``127.0.0.1:9999``, ``10.0.0.0/8``, ``10.1.0.0/16:8443``, ``[::1]:9999``,
``fd00::/8``). Host names are not accepted: the decision is made on the address a name
resolved to, right before connecting (tocsin_common.outgoing_http), so a name that
resolves, or is rebound, to 169.254.169.254 is refused like the address itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "notification.outgoing.allow"

# Checked in order; the first match names the reason. Anything else that is not globally
# routable is refused as "not a public address".
_REFUSED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unspecified address", ("0.0.0.0/32", "::/128")),
    ("loopback address", ("127.0.0.0/8", "::1/128")),
    (
        "link-local address (cloud metadata services live here)",
        ("169.254.0.0/16", "fe80::/10"),
    ),
    ("private address", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("shared address space (CGNAT)", ("100.64.0.0/10",)),
    ("multicast address", ("224.0.0.0/4", "ff00::/8")),
    ("reserved address", ("0.0.0.0/8", "240.0.0.0/4", "::/8")),
)
_REFUSED_NETWORKS: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = tuple(
    (reason, tuple(ipaddress.ip_network(n) for n in networks)) for reason, networks in _REFUSED
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class DestinationRefused(OSError):
    """An outgoing connection refused by the destination policy, before any packet is sent.

    An OSError so that HTTP clients carry it as the cause of their connection error."""

    def __init__(self, address: str, port: int, reason: str, host: str | None = None) -> None:
        self.address = address
        self.port = port
        self.reason = reason
        self.host = host
        named = f"{host} ({address})" if host and host != address else address
        super().__init__(
            f"destination {named} port {port} refused: {reason}; outgoing requests to "
            f"non-public addresses need an entry in {ALLOW_SETTING}"
        )


@dataclass(frozen=True)
class AllowRule:
    """One allow-list entry: a network, and a port (None: every port)."""

    network: IPNetwork
    port: int | None = None

    def matches(self, address: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return address.version == self.network.version and address in self.network

    def __str__(self) -> str:
        net = str(self.network)
        if self.network.num_addresses == 1:
            net = str(self.network.network_address)
        if self.port is None:
            return net
        return f"[{net}]:{self.port}" if self.network.version == 6 else f"{net}:{self.port}"


def parse_allow_rule(entry: str) -> AllowRule:
    """An allow-list entry, or ValueError saying what is wrong with it."""
    text = entry.strip()
    port: int | None = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{entry!r}: '[' without ']' (write IPv6 with a port as [::1]:9999)")
        rest = text[close + 1 :]
        text = text[1:close]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r}: expected ':<port>' after ']'")
            port = _port(entry, rest[1:])
    elif text.count(":") == 1:  # IPv4 (or a host name) with a port
        text, port_text = text.split(":")
        port = _port(entry, port_text)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"{entry!r}: not an IP address or CIDR network (optionally with a port, as "
            "127.0.0.1:9999, 10.0.0.0/8 or [::1]:9999); host names are not accepted, the "
            "check is made on the address a name resolves to"
        ) from None
    return AllowRule(network, port)


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{entry!r}: port {text!r} is not a number from 1 to 65535")
    return int(text)


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` is refused without an allow-list entry; None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = refusal_reason(embedded)
            return f"{inner} ({embedded} inside IPv6)" if inner else None
    for reason, networks in _REFUSED_NETWORKS:
        if any(address in network for network in networks if network.version == address.version):
            return reason
    if not address.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


class DestinationPolicy:
    """Refuses non-public destinations unless an allow-list entry matches."""

    def __init__(self, allow: Iterable[str | AllowRule] = ()) -> None:
        self.rules: tuple[AllowRule, ...] = tuple(
            rule if isinstance(rule, AllowRule) else parse_allow_rule(rule) for rule in allow
        )

    def refusal(
        self, address: str, port: int, host: str | None = None
    ) -> DestinationRefused | None:
        """None when a connection to ``address``:``port`` may be made; else the refusal.

        ``address`` is an IP address as resolved (an IPv6 scope such as %eth0 is
        ignored); ``host`` is the name it was resolved from, for the message."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return DestinationRefused(address, port, "not an IP address", host)
        reason = refusal_reason(ip)
        if reason is None:
            return None
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if any(rule.matches(c, port) for rule in self.rules for c in candidates):
            return None
        return DestinationRefused(str(ip), port, reason, host)

    def check(self, address: str, port: int, host: str | None = None) -> None:
        """Raise DestinationRefused unless the destination is allowed."""
        refused = self.refusal(address, port, host)
        if refused is not None:
            raise refused
