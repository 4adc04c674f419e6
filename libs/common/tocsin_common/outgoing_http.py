"""aiohttp plumbing for the outgoing destination policy (tocsin_common.outgoing).

`guarded_connector(policy)` is a TCPConnector that checks every address at two points:

- its resolver refuses a host name when any address it resolved to is refused (so a name
  pointing at 169.254.169.254, or rebound to it, fails with one clear error), and
- its socket factory checks the exact address of every connection attempt, before the
  socket exists: IP-literal URLs (which skip the resolver), cached resolutions and any
  path that bypasses the resolver are covered too. Nothing is sent to a refused address.

A refused destination surfaces as aiohttp's ClientConnectorError whose `os_error` is the
DestinationRefused; `destination_refused(error)` finds it. Sessions using this connector
must also pass `allow_redirects=False` (a redirect would be checked, but its body and
headers are the sender's, not the target's; Tocsin follows none) and keep
`trust_env=False` (the default), so no proxy from the environment is used.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from tocsin_common.outgoing import DestinationPolicy, DestinationRefused


class GuardedResolver(AbstractResolver):
    """A resolver that refuses a name when any of its addresses is refused."""

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._policy.check(result["host"], result["port"], host)
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(policy: DestinationPolicy) -> Any:
    """A socket factory (aiohappyeyeballs' AddrInfoType -> socket) that checks the address
    before creating the socket."""

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        policy.check(str(sockaddr[0]), int(sockaddr[1]))
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def guarded_connector(
    policy: DestinationPolicy, *, resolver: AbstractResolver | None = None, **kwargs: Any
) -> aiohttp.TCPConnector:
    """A TCPConnector enforcing ``policy`` on every resolved address (``resolver``: the
    inner resolver, ThreadedResolver by default; ``kwargs`` go to TCPConnector)."""
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(policy, resolver),
        socket_factory=guarded_socket_factory(policy),
        **kwargs,
    )


def destination_refused(error: BaseException) -> DestinationRefused | None:
    """The DestinationRefused behind an aiohttp error (its cause chain), if any."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, DestinationRefused):
            return seen
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, DestinationRefused):
            return os_error
        seen = seen.__cause__ or seen.__context__
    return None


def redacted_url(url: str) -> str:
    """``scheme://host[:port]/…``: what may be logged or put on a span of a URL whose
    path or query can hold a secret (Slack and Teams webhook paths are credentials)."""
    from yarl import URL

    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return "<unparseable URL>"
    if not parsed.host:
        return "<URL without host>"
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    port = f":{parsed.explicit_port}" if parsed.explicit_port is not None else ""
    return f"{parsed.scheme}://{host}{port}/…"
