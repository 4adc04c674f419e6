"""Access control at the edges: authenticate a call, authorize an action, audit both.

One :class:`AccessControl` per process. Its gRPC interceptor authenticates every call
(``authorization: Bearer <token>`` metadata) except the health and reflection services and
the methods a service names as open (alert-ingest's, which authenticate by integration
key); servicers then ask :meth:`AccessControl.authorize` for the action and resource at
hand, which applies :func:`~tocsin_common.auth.policy.decide`, writes an audit record for
every mutation and every denial, and aborts with PERMISSION_DENIED and the reason when
denied. Redis and the audit producer are created on first use, on the loop that serves
the calls (correlation's gRPC server runs on a thread of its own).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc
from opentelemetry import trace
from redis.asyncio import Redis
from tocsin.v1 import auth_pb2

from tocsin_common.auth.directory import principal_for
from tocsin_common.auth.oidc import OidcAuthenticator, OidcError, looks_like_jwt
from tocsin_common.auth.policy import (
    ANONYMOUS_ACTOR,
    SERVICE_PREFIX,
    Decision,
    Principal,
    PrincipalKind,
    Resource,
    decide,
    is_mutation,
)
from tocsin_common.auth.service_credentials import (
    is_service_credential,
    read_service_secret,
    service_credential,
    verify_service_credential,
)
from tocsin_common.auth.tokens import TokenStore, token_hash
from tocsin_common.clock import Clock, SystemClock
from tocsin_common.config import ConfigStore
from tocsin_common.kafka import EventProducer
from tocsin_common.redisclient import blocking_redis_client
from tocsin_common.settings import Settings
from tocsin_common.timeutil import set_timestamp
from tocsin_common.topics import AUDIT
from tocsin_common.transport import KafkaSecurity, RedisConnection

log = logging.getLogger(__name__)

# Open without a credential in every service: probes and tooling need no secret.
ALWAYS_OPEN = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "tocsin_principal", default=None
)


def current_principal() -> Principal | None:
    """The principal of the call being served (set by the interceptor)."""
    return _principal.get()


@dataclass(frozen=True)
class AuthFailure:
    reason: str


REDIS_CONNECTIONS = 100  # redis-py's default pool size, which raises when exhausted
REDIS_WAIT_S = 10.0  # as long as the api waits for a service's answer
MAX_TOKEN_CACHE_SECONDS = 5.0
TOKEN_CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    until: datetime  # the cache entry's end: at most the TTL, never past the token's expiry
    config: object  # the configuration the principal was built from


class Authenticator:
    """Credential -> principal. By default API tokens are read from Redis on every call (no
    cache), so a revoked token stops working on the next call; with ``cache_seconds`` (at
    most :data:`MAX_TOKEN_CACHE_SECONDS`: the api's) a verified API token is kept that long
    (never past its expiry, nor past a config reload), so a revocation is honoured within
    that time, and at once by :meth:`forget`. Service credentials are checked by MAC; a JWT
    is an OIDC token, checked against the provider of ``access.oidc``."""

    def __init__(
        self,
        tokens: Callable[[], TokenStore],
        config: ConfigStore,
        service_secret: bytes,
        clock: Clock,
        oidc: OidcAuthenticator | None = None,
        cache_seconds: float = 0.0,
    ) -> None:
        if not 0 <= cache_seconds <= MAX_TOKEN_CACHE_SECONDS:
            raise ValueError(
                f"cache_seconds: {cache_seconds:g}, expected 0 to {MAX_TOKEN_CACHE_SECONDS:g}"
            )
        self._tokens = tokens
        self._config = config
        self._service_secret = service_secret
        self._clock = clock
        self._oidc = oidc or OidcAuthenticator()
        self._cache_ttl = timedelta(seconds=cache_seconds)
        self._cache: dict[str, _Verified] = {}  # token hash -> verified principal

    def forget(self, token_id: str) -> None:
        """Drops every cached verification of the token ``token_id`` (revoked here)."""
        for key in [k for k, v in self._cache.items() if v.principal.token_id == token_id]:
            del self._cache[key]

    def _cached(self, credential: str) -> Principal | None:
        if not self._cache_ttl:
            return None
        key = token_hash(credential)
        found = self._cache.get(key)
        if found is None:
            return None
        if found.until <= self._clock.now() or found.config is not self._config.current:
            del self._cache[key]
            return None
        return found.principal

    def _remember(self, credential: str, principal: Principal, expires_at: datetime) -> None:
        if not self._cache_ttl:
            return
        if len(self._cache) >= TOKEN_CACHE_ENTRIES:  # the oldest entry goes (insertion order)
            del self._cache[next(iter(self._cache))]
        until = min(self._clock.now() + self._cache_ttl, expires_at)
        self._cache[token_hash(credential)] = _Verified(principal, until, self._config.current)

    async def authenticate(self, authorization: str | None) -> Principal | AuthFailure:
        if not authorization:
            return AuthFailure(
                "no credential: send the metadata 'authorization: Bearer <token>' "
                "(docs/security.md)"
            )
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return AuthFailure("authorization: expected 'Bearer <token>'")
        if is_service_credential(credential):
            service = verify_service_credential(self._service_secret, credential)
            if service is None:
                return AuthFailure("invalid service credential")
            return Principal(f"{SERVICE_PREFIX}{service}", PrincipalKind.SERVICE)
        if looks_like_jwt(credential):
            try:
                return await self._oidc.authenticate(self._config.current, credential)
            except OidcError as e:
                return AuthFailure(f"OIDC token refused: {e}")
        cached = self._cached(credential)
        if cached is not None:
            return cached
        config = self._config.current
        record = await self._tokens().verify(credential, self._clock.now())
        if record is None:
            return AuthFailure("unknown, revoked or expired token")
        principal = principal_for(
            config,
            record.subject_id,
            record.subject_kind,
            scope=record.scope,
            token_id=record.token_id,
        )
        if principal is None:
            return AuthFailure(
                f"the token's subject {record.subject_id!r} is no longer in the configuration"
            )
        if config is self._config.current:
            self._remember(credential, principal, record.expires_at)
        return principal


class AuditLog:
    """Audit records on the audit topic, each durable (acks=all) before the call goes on."""

    def __init__(
        self, bootstrap: str, service: str, clock: Clock, security: KafkaSecurity | None = None
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._service = service
        self._clock = clock
        self._producer: EventProducer | None = None
        self._lock: asyncio.Lock | None = None

    async def _started(self) -> EventProducer:
        if self._producer is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._producer is None:
                    producer = EventProducer(
                        self._bootstrap, self._service, security=self._security
                    )
                    await producer.start()
                    self._producer = producer
        return self._producer

    async def producer(self) -> EventProducer:
        """The audit topic's producer, started once (the api also puts a status page
        subscription's confirmation request on notifications.requests with it)."""
        return await self._started()

    async def record(
        self,
        *,
        principal: Principal | None,
        action: str,
        resource: Resource,
        decision: Decision,
        peer: str,
        method: str,
    ) -> auth_pb2.AuditRecord:
        span = trace.get_current_span().get_span_context()
        record = auth_pb2.AuditRecord(
            audit_id=str(uuid.uuid4()),
            actor=principal.id if principal else ANONYMOUS_ACTOR,
            actor_kind=int(principal.kind) if principal else 0,  # type: ignore[arg-type]
            action=action,
            resource_kind=resource.kind,
            resource_id=resource.id,
            allowed=decision.allowed,
            reason=decision.reason,
            peer=peer,
            trace_id=f"{span.trace_id:032x}" if span.is_valid else "",
            service=self._service,
            method=method,
        )
        set_timestamp(record.at, self._clock.now())
        producer = await self._started()
        await producer.send(AUDIT, record.actor, record)
        return record

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()


class AccessControl:
    """Authentication, authorization and audit for one service's calls."""

    def __init__(
        self,
        *,
        service: str,
        config: ConfigStore,
        redis: RedisConnection,
        kafka_bootstrap: str,
        service_secret: bytes,
        kafka_security: KafkaSecurity | None = None,
        clock: Clock | None = None,
        open_methods: Iterable[str] = (),
        token_cache_seconds: float = 0.0,
    ) -> None:
        self.service = service
        self.config = config
        self.clock = clock or SystemClock()
        self.kafka_bootstrap = kafka_bootstrap
        self.kafka_security = kafka_security
        self._redis_connection = redis
        self._redis: Redis | None = None
        self._service_secret = service_secret
        self.authenticator = Authenticator(
            self.tokens, config, service_secret, self.clock, cache_seconds=token_cache_seconds
        )
        self.audit = AuditLog(kafka_bootstrap, service, self.clock, kafka_security)
        self._open = (*ALWAYS_OPEN, *open_methods)

    def redis(self) -> Redis:
        """The process's Redis client for tokens (and the api's rate limits and feeds): a
        blocking pool, so that a burst of calls past its connections waits for one (up to
        REDIS_WAIT_S) instead of failing with redis-py's "Too many connections"."""
        if self._redis is None:  # created on the loop that serves the calls
            self._redis = blocking_redis_client(
                self._redis_connection, max_connections=REDIS_CONNECTIONS, timeout=REDIS_WAIT_S
            )
        return self._redis

    def tokens(self) -> TokenStore:
        return TokenStore(self.redis())

    def credential(self) -> str:
        """This service's own credential, for its calls to the other services."""
        return service_credential(self._service_secret, self.service)

    def is_open(self, method: str) -> bool:
        return method.startswith(self._open)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return AuthServerInterceptor(self)

    async def check(
        self, context: grpc.aio.ServicerContext, action: str, resource: Resource
    ) -> Decision:
        """The decision on ``action`` for the caller, audited when a mutation or a denial."""
        principal = self.principal()
        decision = decide(principal, action, resource)
        if is_mutation(action) or not decision.allowed:
            await self.audit.record(
                principal=principal,
                action=action,
                resource=resource,
                decision=decision,
                peer=_peer(context),
                method=_method(),
            )
        return decision

    async def authorize(
        self, context: grpc.aio.ServicerContext, action: str, resource: Resource
    ) -> Principal:
        """The caller's principal if it may do ``action`` on ``resource``; otherwise the call
        is aborted with PERMISSION_DENIED and the reason. Mutations and denials are audited."""
        decision = await self.check(context, action, resource)
        if not decision.allowed:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, decision.reason)
        return self.principal()

    @staticmethod
    def principal() -> Principal:
        """The authenticated principal of the call being served (after the interceptor)."""
        principal = current_principal()
        if principal is None:
            raise RuntimeError("no authenticated principal: is the method open?")
        return principal

    async def still_valid(self, principal: Principal) -> bool:
        """Whether the API token the principal came with is still live (for long calls such
        as Watch, which would otherwise outlive a revocation). Service credentials and OIDC
        tokens have no runtime revocation: True."""
        if not principal.token_id:
            return True
        record = await self.tokens().get(principal.token_id)
        return record is not None and record.expires_at > self.clock.now()

    def allows(self, action: str, resource: Resource) -> bool:
        """Whether the caller may do a read ``action`` (for filtering lists; not audited)."""
        principal = current_principal()
        return principal is not None and decide(principal, action, resource).allowed

    async def stop(self) -> None:
        await self.audit.stop()
        if self._redis is not None:
            await self._redis.aclose()


def _peer(context: grpc.aio.ServicerContext) -> str:
    try:
        return str(context.peer())
    except Exception:  # a peer is informative only: never fail a call for it
        return ""


_method_var: contextvars.ContextVar[str] = contextvars.ContextVar("tocsin_method", default="")


def _method() -> str:
    return _method_var.get()


def _authorization(metadata: Iterable[tuple[str, Any]]) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


class AuthServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every call but the open ones; UNAUTHENTICATED (audited) without a valid
    credential. The servicer then sees the principal through :func:`current_principal`."""

    def __init__(self, access: AccessControl) -> None:
        self._access = access

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or self._access.is_open(method):
            return handler
        authorization = _authorization(handler_call_details.invocation_metadata or ())
        access = self._access

        async def admit(context: grpc.aio.ServicerContext) -> None:
            _method_var.set(method)
            outcome = await access.authenticator.authenticate(authorization)
            if isinstance(outcome, AuthFailure):
                await access.audit.record(
                    principal=None,
                    action=method,
                    resource=Resource("rpc", method),
                    decision=Decision(False, outcome.reason),
                    peer=_peer(context),
                    method=method,
                )
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, outcome.reason)
            else:
                _principal.set(outcome)

        return _wrap(handler, admit)


def _wrap(
    handler: grpc.RpcMethodHandler,
    admit: Callable[[grpc.aio.ServicerContext], Awaitable[None]],
) -> grpc.RpcMethodHandler:
    """``handler`` with ``admit`` awaited before its behaviour, whatever its kind."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary or handler.stream_unary:
        inner_unary = handler.unary_unary or handler.stream_unary

        async def unary_out(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            return await inner_unary(request, context)

        make = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return make(unary_out, **codec)  # type: ignore[no-any-return]
    inner_stream = handler.unary_stream or handler.stream_stream

    async def stream_out(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await admit(context)
        async for item in inner_stream(request, context):
            yield item

    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return make(stream_out, **codec)  # type: ignore[no-any-return]


class _Bearer:
    """Adds ``authorization: Bearer <credential>`` to a call's metadata."""

    def __init__(self, credential: str) -> None:
        self._entry = ("authorization", f"Bearer {credential}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._entry)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _BearerUnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _BearerUnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _BearerStreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _BearerStreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def bearer_interceptors(credential: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that add ``credential`` to every call of a channel, one per kind
    of call: grpc.aio files an interceptor under the first kind it implements only, so one
    object implementing all four would carry the credential on unary calls alone."""
    return [
        _BearerUnaryUnary(credential),
        _BearerUnaryStream(credential),
        _BearerStreamUnary(credential),
        _BearerStreamStream(credential),
    ]


def bearer_metadata(credential: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``credential``, for stubs on a channel without interceptors."""
    return (("authorization", f"Bearer {credential}"),)


def access_control(
    settings: Settings,
    config: ConfigStore,
    *,
    open_methods: Iterable[str] = (),
    token_cache_seconds: float = 0.0,
) -> AccessControl:
    """The process's AccessControl from its settings; the service secret is required
    (SecretError naming the variable otherwise). ``token_cache_seconds``: see
    :class:`Authenticator` (the api's HTTP edge only)."""
    return AccessControl(
        service=settings.service,
        config=config,
        redis=settings.redis,
        kafka_bootstrap=settings.kafka_bootstrap,
        kafka_security=settings.kafka_security,
        service_secret=read_service_secret(),
        open_methods=open_methods,
        token_cache_seconds=token_cache_seconds,
    )
