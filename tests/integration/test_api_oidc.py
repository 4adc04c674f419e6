"""An OIDC login's token through the REST API: authenticated by the api, forwarded to the
services, the mapped person is the actor (the provider from test_oidc.py)."""

from __future__ import annotations

import pytest
from tocsin_common.config.model import Oidc

from tests.integration.api_client import assert_problem, client
from tests.integration.harness import Stack
from tests.integration.test_oidc import login, provider, settings, tampered

pytestmark = pytest.mark.integration
__all__ = ["provider", "settings"]  # module fixtures of test_oidc.py, used here too


async def test_an_oidc_token_works_through_the_api_as_its_person(
    stack: Stack, provider: str, settings: Oidc, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = await login(
        provider,
        settings,
        monkeypatch,
        "rita-at-idp-api",
        preferred_username="oidc-rita",
        groups=["sre-leads"],
    )
    async with client(stack, tokens.id_token) as api:
        me = (await api.get("/users/me")).json()
        assert me["id"] == "oidc-rita" and me["team_roles"] == {"auth-sre": "manager"}
        made = await api.post(
            "/silences",
            json={"service_id": "auth-sre-svc", "matchers": ["a=b"], "duration_seconds": 60},
        )
        assert made.status_code == 201, made.text
        assert made.json()["created_by"] == "oidc-rita"  # the services saw the person
        assert (await api.delete(f"/silences/{made.json()['id']}")).status_code == 204
        denied = await api.post(
            "/silences",
            json={"service_id": "auth-other-svc", "matchers": ["a=b"], "duration_seconds": 60},
        )
        assert_problem(denied, 403)
    async with client(stack, tampered(tokens.id_token, preferred_username="auth-mgr")) as forged:
        assert_problem(await forged.get("/users/me"), 401)
