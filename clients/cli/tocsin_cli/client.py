"""The REST API seen from the CLI: httpx calls under ``/api/v1`` with the bearer token,
and the api's errors (RFC 9457 problem+json) turned into one readable line and an exit code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tocsin_cli.exitcodes import CliError, Exit, exit_for_status
from tocsin_cli.profiles import API_PREFIX

Params = Mapping[str, str | int | Sequence[str] | None]


def problem_message(status: int, body: Any, reason: str = "") -> str:
    """One line from an error answer: the status, the problem's title or detail, and each
    field it names with its problem (``errors: [{field, problem}]``), e.g.
    ``422 Unprocessable Content: duration_seconds: must be more than 0``."""
    head = f"{status} {reason}".strip()
    if not isinstance(body, Mapping):
        text = str(body).strip() if body else ""
        return f"{head}: {text[:300]}" if text else head
    detail = str(body.get("detail") or body.get("title") or "").strip()
    fields = []
    for error in body.get("errors") or []:
        if isinstance(error, Mapping):
            field = str(error.get("field") or error.get("name") or "").strip()
            problem = str(error.get("problem") or error.get("message") or error.get("reason") or "")
            fields.append(f"{field}: {problem}" if field else problem)
    line = head
    if fields:
        line += ": " + "; ".join(fields)
        if detail and not any(detail in f for f in fields):
            line += f" ({detail})"
    elif detail and detail.lower() != reason.lower():
        line += f": {detail}"
    return " ".join(line.split())  # one line, whatever the server put in


def retry_hint(headers: Mapping[str, str]) -> str:
    after = headers.get("retry-after")
    return f" (retry after {after} s)" if after else ""


@dataclass(frozen=True)
class Response:
    status: int
    body: Any
    headers: Mapping[str, str]


class ApiClient:
    """Calls to one api (``base_url`` without ``/api/v1``) as one principal."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.token = token
        headers = {"Accept": "application/json", "User-Agent": "tocsin-cli/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(
            base_url=base_url + API_PREFIX,
            headers=headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: Sequence[int] = (),
    ) -> Response:
        """Send one request; the answer when it is 2xx (or in ``ok``), else :class:`CliError`
        with the problem's line and the status's exit code."""
        if self.token is None:
            raise CliError(
                "not logged in: run `tocsin login --token TOKEN` (or set TOCSIN_TOKEN)", Exit.AUTH
            )
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != []}
        try:
            answer = self.http.request(method, path, params=clean, json=json, headers=headers)
        except httpx.TimeoutException:
            raise CliError(
                f"{method} {self.base_url}{API_PREFIX}{path}: timed out", Exit.UNREACHABLE
            ) from None
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach the api at {self.base_url}: {exc or type(exc).__name__}",
                Exit.UNREACHABLE,
            ) from None
        body = _body(answer)
        if answer.is_success or answer.status_code in ok:
            return Response(answer.status_code, body, answer.headers)
        message = problem_message(answer.status_code, body, answer.reason_phrase)
        if answer.status_code == 401:
            message += " (log in again: `tocsin login`)"
        if answer.status_code == 429:
            message += retry_hint(answer.headers)
        raise CliError(message, exit_for_status(answer.status_code))

    def get(self, path: str, params: Params | None = None) -> Any:
        return self.request("GET", path, params=params).body

    def post(self, path: str, json: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        return self.request(
            "POST", path, json=json if json is not None else {}, headers=headers
        ).body

    def put(self, path: str, json: Any = None) -> Any:
        return self.request("PUT", path, json=json if json is not None else {}).body

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path).body

    def pages(
        self, path: str, key: str, params: Params | None = None, *, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated listing (``next_cursor`` until null), at most
        ``limit`` of them when given."""
        query: dict[str, Any] = dict(params or {})
        count = 0
        while True:
            page = self.get(path, query)
            for item in page.get(key) or []:
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return
            query["cursor"] = cursor


def _body(answer: httpx.Response) -> Any:
    if not answer.content:
        return None
    kind = answer.headers.get("content-type", "")
    if "json" in kind:
        try:
            return answer.json()
        except ValueError:
            return answer.text
    return answer.text
