"""The gRPC AuthService: who am I, API tokens, and the audit log (thin: rules are in
policy.decide, storage in tokens.TokenStore, reading in audit_reader)."""

from __future__ import annotations

from datetime import timedelta

import grpc
from tocsin.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc

from tocsin_common.auth.access import AccessControl
from tocsin_common.auth.audit_reader import AuditQuery, read_audit
from tocsin_common.auth.directory import principal_for
from tocsin_common.auth.policy import Principal, PrincipalKind, Resource, Role
from tocsin_common.auth.tokens import DEFAULT_TTL, MAX_TTL, TokenRecord
from tocsin_common.timeutil import from_timestamp, set_timestamp

MAX_TOKEN_NAME = 100


def principal_proto(principal: Principal) -> auth_pb2.Principal:
    return auth_pb2.Principal(
        id=principal.id,
        kind=int(principal.kind),  # type: ignore[arg-type]
        admin=principal.admin,
        team_roles=[
            auth_pb2.TeamRole(team_id=team, role=int(role))  # type: ignore[arg-type]
            for team, role in sorted(principal.team_roles.items())
        ],
        scope=int(principal.scope),  # type: ignore[arg-type]
        token_id=principal.token_id,
    )


def token_info(record: TokenRecord) -> auth_pb2.TokenInfo:
    info = auth_pb2.TokenInfo(
        token_id=record.token_id,
        subject_id=record.subject_id,
        subject_kind=int(record.subject_kind),  # type: ignore[arg-type]
        name=record.name,
        scope=int(record.scope),  # type: ignore[arg-type]
        created_by=record.created_by,
    )
    set_timestamp(info.created_at, record.created_at)
    set_timestamp(info.expires_at, record.expires_at)
    if record.last_used_at is not None:
        set_timestamp(info.last_used_at, record.last_used_at)
    return info


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, access: AccessControl) -> None:
        self._access = access

    async def WhoAmI(
        self, request: auth_service_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.Principal:
        return principal_proto(self._access.principal())

    def _subject_kind(self, subject_id: str) -> PrincipalKind | None:
        """USER or SERVICE_ACCOUNT: the kind the config knows ``subject_id`` as, if any."""
        config = self._access.config.current
        for kind in (PrincipalKind.USER, PrincipalKind.SERVICE_ACCOUNT):
            if principal_for(config, subject_id, kind) is not None:
                return kind
        return None

    async def CreateToken(
        self, request: auth_service_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_service_pb2.CreateTokenResponse:
        caller = self._access.principal()
        subject = request.subject_id or caller.id
        name = request.name.strip()
        if not name or len(name) > MAX_TOKEN_NAME:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"name: what the token is for, 1 to {MAX_TOKEN_NAME} characters",
            )
        ttl = (
            timedelta(seconds=request.ttl.seconds, microseconds=request.ttl.nanos // 1000)
            if request.HasField("ttl")
            else DEFAULT_TTL
        )
        if ttl <= timedelta(0) or ttl > MAX_TTL:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"ttl: must be positive and at most {MAX_TTL.days} days",
            )
        scope = Role(request.scope) if request.scope else Role.ADMIN
        kind = self._subject_kind(subject)
        await self._access.authorize(
            context, "token.create", Resource("token", subject, owner=subject)
        )
        if kind is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"subject_id: no user or service account {subject!r}",
            )
            raise AssertionError("unreachable")
        token, record = await self._access.tokens().create(
            subject_id=subject,
            subject_kind=kind,
            name=name,
            scope=scope,
            ttl=ttl,
            created_by=caller.id,
            now=self._access.clock.now(),
        )
        return auth_service_pb2.CreateTokenResponse(token=token, info=token_info(record))

    async def ListTokens(
        self, request: auth_service_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> auth_service_pb2.ListTokensResponse:
        caller = self._access.principal()
        subject = request.subject_id or caller.id
        if subject == "*":
            await self._access.authorize(context, "token.read", Resource("token", "*"))
            records = await self._access.tokens().list(None)
        else:
            await self._access.authorize(
                context, "token.read", Resource("token", subject, owner=subject)
            )
            records = await self._access.tokens().list(subject)
        return auth_service_pb2.ListTokensResponse(tokens=[token_info(r) for r in records])

    async def RevokeToken(
        self, request: auth_service_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_service_pb2.RevokeTokenResponse:
        if not request.token_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "token_id: is required")
        record = await self._access.tokens().get(request.token_id)
        owner = record.subject_id if record else ""
        await self._access.authorize(
            context, "token.revoke", Resource("token", request.token_id, owner=owner)
        )
        if record is None or not await self._access.tokens().revoke(request.token_id):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"token_id: no live token {request.token_id!r}"
            )
        return auth_service_pb2.RevokeTokenResponse()

    async def ListAudit(
        self, request: auth_service_pb2.ListAuditRequest, context: grpc.aio.ServicerContext
    ) -> auth_service_pb2.ListAuditResponse:
        await self._access.authorize(context, "audit.read", Resource("audit"))
        limit = request.limit or 100
        if not 0 < limit <= 1000:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "limit: 1 to 1000")
        now = self._access.clock.now()
        since = from_timestamp(request.since) if request.HasField("since") else None
        until = from_timestamp(request.until) if request.HasField("until") else None
        query = AuditQuery(
            actor=request.actor,
            action=request.action,
            resource_id=request.resource_id,
            since=since or now - timedelta(days=1),
            until=until,
            denied_only=request.denied_only,
            limit=limit,
        )
        records = await read_audit(self._access.kafka_bootstrap, query, self._access.kafka_security)
        return auth_service_pb2.ListAuditResponse(records=records)
