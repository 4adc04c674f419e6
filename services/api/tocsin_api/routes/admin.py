"""The audit log and API tokens (over escalation's AuthService, as the caller)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from google.protobuf.duration_pb2 import Duration
from tocsin.v1 import auth_service_pb2
from tocsin_common.timeutil import to_timestamp

from tocsin_api import convert, models
from tocsin_api.backends import call
from tocsin_api.deps import Caller, CallerDep, state_of
from tocsin_api.problems import invalid

router = APIRouter(prefix="/api/v1", tags=["admin"])


MAX_SKIP = 100


def encode_cursor(records: list[dict[str, Any]]) -> str:
    """After the page's last record: the records older than its instant, and those of its
    instant not yet shown (``until`` is exclusive, and records can share an instant)."""
    last = records[-1]["at"]
    shown = [r["id"] for r in records if r["at"] == last][:MAX_SKIP]
    return base64.urlsafe_b64encode(json.dumps({"at": last, "shown": shown}).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, set[str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        value = datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00"))
        shown = {str(i) for i in data["shown"]}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise invalid("cursor", "not a cursor of this API") from None
    if value.tzinfo is None or len(shown) > MAX_SKIP:
        raise invalid("cursor", "not a cursor of this API")
    return value, shown


@router.get(
    "/audit_records",
    response_model=models.AuditRecords,
    summary="The audit log, newest first (admins)",
)
async def audit_records(
    request: Request,
    caller: Caller = CallerDep,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    resource_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    denied_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise invalid(name, "needs a time zone offset (RFC 3339), e.g. 2026-01-01T00:00:00Z")
    shown: set[str] = set()
    if cursor:
        at, shown = decode_cursor(cursor)
        until = at + timedelta(microseconds=1)  # the instant itself, less what was shown
    req = auth_service_pb2.ListAuditRequest(
        actor=actor or "",
        action=action or "",
        resource_id=resource_id or "",
        denied_only=denied_only,
        limit=limit + len(shown),
    )
    if since is not None:
        req.since.CopyFrom(to_timestamp(since))
    if until is not None:
        req.until.CopyFrom(to_timestamp(until))
    found = await call(state_of(request).backends.auth.ListAudit, req, caller.credential)
    records = [convert.audit_record(r) for r in found.records if r.audit_id not in shown][:limit]
    full = len(records) == limit and records[-1]["at"] is not None
    return {"audit_records": records, "next_cursor": encode_cursor(records) if full else None}


@router.get("/tokens", response_model=models.Tokens, summary="API tokens (yours; admins: any)")
async def tokens(
    request: Request,
    caller: Caller = CallerDep,
    subject_id: Annotated[
        str | None, Query(min_length=1, max_length=200, description='"*": every subject (admins)')
    ] = None,
) -> dict[str, Any]:
    found = await call(
        state_of(request).backends.auth.ListTokens,
        auth_service_pb2.ListTokensRequest(subject_id=subject_id or ""),
        caller.credential,
    )
    return {"tokens": [convert.token(t) for t in found.tokens]}


@router.post(
    "/tokens",
    status_code=201,
    response_model=models.CreatedToken,
    summary="Create an API token (its secret is shown once)",
)
async def create_token(
    body: models.TokenBody, request: Request, caller: Caller = CallerDep
) -> dict[str, Any]:
    req = auth_service_pb2.CreateTokenRequest(
        subject_id=body.subject_id or "",
        name=body.name,
        scope=convert.ROLE_VALUES[body.scope] if body.scope else 0,  # type: ignore[arg-type]
    )
    if body.expires_in_days is not None:
        ttl = Duration()
        ttl.FromTimedelta(timedelta(days=body.expires_in_days))
        req.ttl.CopyFrom(ttl)
    created = await call(
        state_of(request).backends.auth.CreateToken,
        req,
        caller.credential,
        {"ttl": "expires_in_days"},
    )
    return {**convert.token(created.info), "token": created.token}


@router.delete(
    "/tokens/{token_id}", status_code=204, response_class=Response, summary="Revoke a token"
)
async def revoke_token(token_id: str, request: Request, caller: Caller = CallerDep) -> Response:
    await call(
        state_of(request).backends.auth.RevokeToken,
        auth_service_pb2.RevokeTokenRequest(token_id=token_id),
        caller.credential,
    )
    # This replica stops accepting it at once; the others within their token cache's TTL.
    forget = getattr(state_of(request).authenticator, "forget", None)
    if forget is not None:
        forget(token_id)
    return Response(status_code=204)
