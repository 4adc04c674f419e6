"""Signed acknowledge/resolve links: tokens with a key id, the key ring and its rotation,
reading the ring from the environment, the (state, action) table, and the HTTP handler
(only POST acts; a moot link answers 409 with the state) against a fake escalation."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError
from tocsin.v1 import incident_pb2, incident_service_pb2
from tocsin_common.clock import FakeClock
from tocsin_common.config.model import LinkSettings
from tocsin_common.secrets import SecretError
from tocsin_notification.http_api import STATE_HEADER, LinkHandler, make_app
from tocsin_notification.links import (
    KeyRing,
    LinkClaim,
    LinkError,
    LinkKey,
    LinkOutcome,
    LinkProblem,
    LinkSigner,
    derived_kid,
    key_ring_from_env,
    link_outcome,
    parse_key_ring,
)

OLD = "o" * 40
NEW = "n" * 40
HOUR = timedelta(hours=1)


def ring(*pairs: tuple[str, str]) -> KeyRing:
    return KeyRing(tuple(LinkKey(kid, secret.encode()) for kid, secret in pairs))


def problem(signer: LinkSigner, token: str, clock: FakeClock) -> LinkProblem:
    with pytest.raises(LinkError) as e:
        signer.verify(token, clock.now())
    return e.value.problem


# --- tokens -----------------------------------------------------------------------------------


def test_a_token_names_its_key_and_round_trips() -> None:
    clock = FakeClock()
    signer = LinkSigner(ring(("k1", NEW), ("k0", OLD)), HOUR)
    token = signer.token("acknowledge", "inc-1", "svc", "alice", clock.now())
    assert token.count(".") == 2
    assert token.split(".")[0] == "k1"  # the current (first) key signs
    claim = signer.verify(token, clock.now())
    assert (claim.action, claim.incident_id, claim.service_id, claim.user_id, claim.kid) == (
        "acknowledge",
        "inc-1",
        "svc",
        "alice",
        "k1",
    )
    assert signer.url("http://h:1/", "resolve", "i", "s", "u", clock.now()).startswith(
        "http://h:1/v1/links/k1."
    )
    with pytest.raises(ValueError, match="action 'snooze'"):
        signer.token("snooze", "i", "s", "u", clock.now())


def test_tampering_with_any_part_is_refused() -> None:
    clock = FakeClock()
    signer = LinkSigner(ring(("k1", NEW), ("k0", OLD)), HOUR)
    token = signer.token("acknowledge", "inc-1", "svc", "alice", clock.now())
    kid, payload, sig = token.split(".")
    other = signer.token("resolve", "inc-1", "svc", "alice", clock.now()).split(".")[1]
    for bad in (
        f"{kid}.{other}.{sig}",  # another payload under this signature
        f"{kid}.{payload}.{sig[:-2]}xx",
        f"k0.{payload}.{sig}",  # the other key of the ring: the kid is signed too
        f"{payload}.{sig}",  # the format before key ids
        f"{kid}.{payload}",
        f"{kid}..{sig}",
        f"{token}.x",
        "",
    ):
        assert problem(signer, bad, clock) is LinkProblem.TAMPERED, bad
    assert problem(signer, f"k9.{payload}.{sig}", clock) is LinkProblem.UNKNOWN_KEY
    assert problem(LinkSigner(ring(("k1", OLD)), HOUR), token, clock) is LinkProblem.TAMPERED


def test_an_expired_link_is_refused_even_when_correctly_signed() -> None:
    clock = FakeClock()
    signer = LinkSigner(ring(("k1", NEW)), HOUR)
    token = signer.token("resolve", "inc-1", "svc", "alice", clock.now())
    clock.advance(3599)
    assert signer.verify(token, clock.now()).action == "resolve"
    clock.advance(1)
    assert problem(signer, token, clock) is LinkProblem.EXPIRED


def test_rotation_keeps_outstanding_links_until_the_old_key_is_retired() -> None:
    clock = FakeClock()
    before = LinkSigner(ring(("k0", OLD)), HOUR)
    outstanding = before.token("acknowledge", "inc-1", "svc", "alice", clock.now())
    rotated = LinkSigner(ring(("k1", NEW), ("k0", OLD)), HOUR)  # new key first, old kept
    assert rotated.verify(outstanding, clock.now()).kid == "k0"
    fresh = rotated.token("acknowledge", "inc-1", "svc", "alice", clock.now())
    assert fresh.startswith("k1.")
    retired = LinkSigner(ring(("k1", NEW)), HOUR)  # old key taken out
    assert problem(retired, outstanding, clock) is LinkProblem.UNKNOWN_KEY
    assert retired.verify(fresh, clock.now()).kid == "k1"


def test_a_lone_secret_is_a_ring_of_one_with_a_kid_from_its_hash() -> None:
    single = KeyRing.single(OLD.encode())
    assert single.kids == (hashlib.sha256(OLD.encode()).hexdigest()[:12],)
    clock = FakeClock()
    token = LinkSigner(single, HOUR).token("resolve", "i", "s", "u", clock.now())
    # Migrating to a ring: the old secret under its derived kid keeps its links working.
    migrated = LinkSigner(ring(("k1", NEW), (derived_kid(OLD.encode()), OLD)), HOUR)
    assert migrated.verify(token, clock.now()).action == "resolve"


def test_a_ring_refuses_bad_kids_duplicates_and_emptiness_and_never_shows_a_secret() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyRing(())
    with pytest.raises(ValueError, match="appears twice"):
        ring(("a", NEW), ("a", OLD))
    with pytest.raises(ValueError, match=r"kid 'a\.b'"):
        ring(("a.b", NEW))
    assert NEW not in repr(ring(("k1", NEW)))


# --- the ring from the environment ----------------------------------------------------------


def test_parse_key_ring_reads_kid_secret_pairs_current_first() -> None:
    parsed = parse_key_ring(f" k1:{NEW} , k0:{OLD}")
    assert parsed.kids == ("k1", "k0")
    assert parsed.current == LinkKey("k1", NEW.encode())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (NEW, "entry 1 is not 'kid:secret'"),
        (f"k1:{NEW},", "entry 2 is not 'kid:secret'"),
        (f":{NEW}", "entry 1 is not 'kid:secret'"),
        (f"k 1:{NEW}", "kid 'k 1' must be"),
        (f"k1:{NEW},k1:{OLD}", "kid 'k1' appears twice"),
        (f"k1:{NEW},k0:short", r"TOCSIN_LINK_KEYS \(kid k0\): 5 bytes"),
        (f"k1:{NEW},k0:change-me-please-change-me-please-123", r"\(kid k0\): a known placeholder"),
    ],
)
def test_parse_key_ring_names_the_variable_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(SecretError, match=message) as e:
        parse_key_ring(text, "TOCSIN_LINK_KEYS")
    assert "TOCSIN_LINK_KEYS" in str(e.value)
    assert NEW not in str(e.value)


def test_key_ring_from_env_takes_the_ring_or_one_secret_from_a_variable_or_a_file(
    tmp_path: Path,
) -> None:
    assert key_ring_from_env(env={"TOCSIN_LINK_KEYS": f"k1:{NEW},k0:{OLD}"}).kids == ("k1", "k0")
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"k1:{NEW}\n")
    assert key_ring_from_env(env={"TOCSIN_LINK_KEYS_FILE": str(keys_file)}).kids == ("k1",)
    one = key_ring_from_env(env={"TOCSIN_LINK_SECRET": OLD})
    assert one == KeyRing.single(OLD.encode())
    secret_file = tmp_path / "secret"
    secret_file.write_text(OLD + "\n")
    assert key_ring_from_env(env={"TOCSIN_LINK_SECRET_FILE": str(secret_file)}) == one
    custom = key_ring_from_env("MY_KEYS", "MY_SECRET", env={"MY_KEYS": f"x:{NEW}"})
    assert custom.kids == ("x",)


def test_key_ring_from_env_is_required_and_unambiguous() -> None:
    with pytest.raises(SecretError, match="TOCSIN_LINK_KEYS: required") as e:
        key_ring_from_env(env={})
    assert "TOCSIN_LINK_SECRET" in str(e.value)
    with pytest.raises(SecretError, match="both set") as e:
        key_ring_from_env(env={"TOCSIN_LINK_KEYS": f"k1:{NEW}", "TOCSIN_LINK_SECRET": OLD})
    assert derived_kid(OLD.encode()) in str(e.value) and OLD not in str(e.value)
    with pytest.raises(SecretError, match="TOCSIN_LINK_SECRET: 10 bytes"):
        key_ring_from_env(env={"TOCSIN_LINK_SECRET": "0123456789"})


def test_link_settings_need_two_different_variables() -> None:
    assert LinkSettings().signing_keys_env == "TOCSIN_LINK_KEYS"
    with pytest.raises(ValidationError, match="signing_keys_env, signing_secret_env"):
        LinkSettings(signing_keys_env="X_LINK", signing_secret_env="X_LINK")


# --- state and action -------------------------------------------------------------------------

S = incident_pb2


@pytest.mark.parametrize(
    ("status", "acknowledge", "resolve"),
    [
        (S.INCIDENT_STATUS_TRIGGERED, LinkOutcome.ACT, LinkOutcome.ACT),
        (S.INCIDENT_STATUS_ACKNOWLEDGED, LinkOutcome.MOOT, LinkOutcome.ACT),
        (S.INCIDENT_STATUS_RESOLVED, LinkOutcome.MOOT, LinkOutcome.MOOT),
        (S.INCIDENT_STATUS_UNSPECIFIED, LinkOutcome.ACT, LinkOutcome.ACT),  # escalation decides
    ],
)
def test_a_link_acts_only_when_the_incident_is_short_of_its_state(
    status: int, acknowledge: LinkOutcome, resolve: LinkOutcome
) -> None:
    assert link_outcome("acknowledge", status) is acknowledge
    assert link_outcome("resolve", status) is resolve


def test_link_outcome_refuses_an_unknown_action() -> None:
    with pytest.raises(ValueError, match="action 'snooze'"):
        link_outcome("snooze", S.INCIDENT_STATUS_TRIGGERED)


# --- the HTTP handler -----------------------------------------------------------------------


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeIncidents:
    """escalation's IncidentService: one incident whose status the commands move."""

    def __init__(self) -> None:
        self.status: int = S.INCIDENT_STATUS_TRIGGERED
        self.commands: list[tuple[str, str, str]] = []
        self.get_error: grpc.aio.AioRpcError | None = None

    async def Get(
        self,
        request: incident_service_pb2.GetIncidentRequest,
        timeout: float | None = None,
    ) -> incident_pb2.Incident:
        if self.get_error is not None:
            raise self.get_error
        return incident_pb2.Incident(
            incident_id=request.incident_id,
            service_id="svc",
            status=self.status,  # type: ignore[arg-type]
        )

    async def send(self, claim: LinkClaim, peer: str) -> None:
        """The link's command, as LinkCommandSender would put it on incidents.commands."""
        self.commands.append((claim.action, claim.incident_id, claim.user_id))
        self.status = (
            S.INCIDENT_STATUS_ACKNOWLEDGED
            if claim.action == "acknowledge"
            else S.INCIDENT_STATUS_RESOLVED
        )


class LinkServer:
    def __init__(self, client: TestClient, incidents: FakeIncidents, signer: LinkSigner) -> None:
        self.client = client
        self.incidents = incidents
        self.signer = signer
        self.clock = FakeClock()

    def path(self, action: str, signer: LinkSigner | None = None) -> str:
        token = (signer or self.signer).token(action, "inc-1", "svc", "alice", self.clock.now())
        return f"/v1/links/{token}"


@pytest.fixture
async def links() -> AsyncIterator[LinkServer]:
    incidents = FakeIncidents()
    signer = LinkSigner(ring(("k1", NEW), ("k0", OLD)), HOUR)
    clock = FakeClock()
    client = TestClient(TestServer(make_app(LinkHandler(signer, incidents, incidents, clock))))
    await client.start_server()
    server = LinkServer(client, incidents, signer)
    server.clock = clock
    yield server
    await client.close()


async def test_head_and_get_change_nothing_and_get_offers_a_form_that_posts(
    links: LinkServer,
) -> None:
    path = links.path("acknowledge")
    r = await links.client.head(path)
    assert r.status == 200
    for query in ("", "?confirm=1", "?confirm=true"):
        r = await links.client.get(path + query)
        text = await r.text()
        assert r.status == 200
        assert '<form method="post">' in text and "<script" not in text
        assert r.headers["Cache-Control"] == "no-store"
        assert "script-src" not in r.headers["Content-Security-Policy"]
    assert links.incidents.commands == []
    assert links.incidents.status == S.INCIDENT_STATUS_TRIGGERED


async def test_post_acts_once_and_a_second_post_answers_409_with_the_state(
    links: LinkServer,
) -> None:
    path = links.path("acknowledge")
    r = await links.client.post(path)
    assert r.status == 200 and "acknowledged" in await r.text()
    assert links.incidents.commands == [("acknowledge", "inc-1", "alice")]
    r = await links.client.post(path)
    text = await r.text()
    assert r.status == 409
    assert r.headers[STATE_HEADER] == "acknowledged"
    assert "already acknowledged" in text and "Nothing was changed" in text
    assert len(links.incidents.commands) == 1
    r = await links.client.get(path)  # the confirm page says so too, without a form
    assert r.status == 409 and "<form" not in await r.text()
    # Resolving an acknowledged incident still acts; then every link is moot.
    assert (await links.client.post(links.path("resolve"))).status == 200
    for action in ("acknowledge", "resolve"):
        r = await links.client.post(links.path(action))
        assert r.status == 409 and r.headers[STATE_HEADER] == "resolved"
    assert [c[0] for c in links.incidents.commands] == ["acknowledge", "resolve"]


async def test_a_link_from_a_retired_key_a_tampered_or_expired_link_acts_on_nothing(
    links: LinkServer,
) -> None:
    retired = LinkSigner(ring(("k-old", OLD)), HOUR)
    r = await links.client.post(links.path("acknowledge", retired))
    assert r.status == 403 and "no longer valid" in await r.text()
    path = links.path("acknowledge")
    r = await links.client.post(path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB"))
    assert r.status == 403 and "not valid" in await r.text()
    links.clock.advance(3600)
    r = await links.client.post(path)
    assert r.status == 410
    assert links.incidents.commands == []


async def test_an_unknown_incident_is_404_and_an_unreachable_escalation_503_without_acting(
    links: LinkServer,
) -> None:
    links.incidents.get_error = rpc_error(grpc.StatusCode.NOT_FOUND, "no incident 'inc-1'")
    r = await links.client.post(links.path("resolve"))
    assert r.status == 404 and "no incident" in await r.text()
    links.incidents.get_error = rpc_error(grpc.StatusCode.UNAVAILABLE)
    assert (await links.client.post(links.path("resolve"))).status == 503
    assert (await links.client.get(links.path("resolve"))).status == 503
    assert links.incidents.commands == []
