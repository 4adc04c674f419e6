"""Status updates: statuses, public message sanitisation, and the no-update reminder."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta

import pytest
from tocsin_common.config.status_page import Reminders
from tocsin_common.statuspage.updates import (
    REDACTED,
    UpdateError,
    clean_public_title,
    next_reminder,
    post_update,
    sanitize_public_message,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

SANITIZE = [
    (
        "plain text stays",
        "We are investigating slow checkouts.",
        "We are investigating slow checkouts.",
        (),
    ),
    ("control characters go", "a\x00b\x07c\x1b[31m", "abc[31m", ()),
    ("bidi and zero-width go", "pay\u202emoc.lipa\u200b", "paymoc.lipa", ()),
    ("tabs, trailing spaces, blank runs", "a\tb  \n\n\n\nc\r\n", "a b\n\nc", ()),
    ("e-mail redacted", "Ask ops@example.com", f"Ask {REDACTED}", ("email",)),
    (
        "private addresses redacted",
        "db at 10.1.2.3 and fd00::1 down",
        f"db at {REDACTED} and {REDACTED} down",
        ("address", "address"),
    ),
    ("public addresses stay", "resolver 8.8.8.8 slow", "resolver 8.8.8.8 slow", ()),
    ("versions are not addresses", "upgrade to 1.2.3", "upgrade to 1.2.3", ()),
    (
        "secret-like tokens redacted",
        "key ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked",
        f"key {REDACTED} leaked",
        ("secret",),
    ),
    (
        "punctuation around a word is kept",
        "(ops@example.com), db 10.0.0.7:5432.",
        f"({REDACTED}), db {REDACTED}.",
        ("email", "address"),
    ),
    ("long words without digits stay", "a" * 40, "a" * 40, ()),
    ("html kept as text (escaped by the page)", "<b>down</b>", "<b>down</b>", ()),
    ("NFC", "cafe\u0301", "caf\u00e9", ()),
]


@pytest.mark.parametrize(
    ("raw", "clean", "redactions"), [c[1:] for c in SANITIZE], ids=[c[0] for c in SANITIZE]
)
def test_sanitize_table(raw: str, clean: str, redactions: tuple[str, ...]) -> None:
    result = sanitize_public_message(raw, 5000)
    assert (result.text, result.redactions) == (clean, redactions)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (" \n\u200b\x00 ", "message: is empty"),
        ("x" * 101, "message: 101 characters, at most 100 (status_page.message_max_chars)"),
    ],
)
def test_sanitize_refuses(raw: str, fragment: str) -> None:
    with pytest.raises(UpdateError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        sanitize_public_message(raw, 100)


def post(previous: list, status: str, minutes: int = 0, **kw: str):  # type: ignore[no-untyped-def, type-arg]
    update, _ = post_update(
        previous,
        incident_id="i1",
        status=status,
        message=kw.get("message", "msg"),
        posted_by="mia",
        now=NOW + timedelta(minutes=minutes),
        max_chars=5000,
        public_title=kw.get("public_title", ""),
    )
    return update


def test_updates_flow_and_keep_the_title() -> None:
    first = post([], "investigating", public_title="Slow checkout for mia@example.com")
    assert first.public_title == f"Slow checkout for {REDACTED}"
    second = post([first], "identified", 5)
    assert second.public_title == first.public_title and second.posted_by == "mia"
    done = post([first, second], "resolved", 10)
    follow_up = post([first, second, done], "resolved", 20, message="post-mortem soon")
    assert follow_up.message == "post-mortem soon"


@pytest.mark.parametrize(
    ("history", "status", "fragment"),
    [
        ([], "investigating", "public_title: the first update needs a title"),
        (["investigating"], "fixed", "status: 'fixed' is not one of investigating, identified"),
        (
            ["investigating", "resolved"],
            "monitoring",
            "a follow-up is 'resolved', not 'monitoring'",
        ),
    ],
)
def test_update_errors_name_the_field(history: list[str], status: str, fragment: str) -> None:
    previous = []
    for i, name in enumerate(history):
        previous.append(post(previous, name, i, public_title="t"))
    with pytest.raises(UpdateError, match=fragment):
        post(previous, status, 10)


def test_an_update_cannot_predate_the_last_one() -> None:
    first = post([], "investigating", 10, public_title="t")
    with pytest.raises(UpdateError, match="posted_at"):
        post([first], "identified", 5)


OPENED = NOW
CADENCE = Reminders(high=timedelta(minutes=30), low=None)
REMINDERS = [
    # (urgency, resolved, last update (min), last reminder (min), due (min) or None)
    ("high", False, None, None, 30),
    ("high", False, 20, None, 50),
    ("high", False, 20, 55, 85),
    ("high", False, 60, 55, 90),
    ("high", True, None, None, None),
    ("low", False, None, None, None),
]


@pytest.mark.parametrize(("urgency", "resolved", "update", "reminded", "due"), REMINDERS)
def test_reminder_table(
    urgency: str, resolved: bool, update: int | None, reminded: int | None, due: int | None
) -> None:
    def at(minutes: int | None) -> datetime | None:
        return None if minutes is None else OPENED + timedelta(minutes=minutes)

    assert next_reminder(
        urgency=urgency,
        opened_at=OPENED,
        resolved=resolved,
        last_public_update_at=at(update),
        last_reminded_at=at(reminded),
        cadence=CADENCE,
    ) == at(due)


def test_far_too_long_is_refused_before_any_work() -> None:
    with pytest.raises(UpdateError, match="message: 401 characters, at most 100"):
        sanitize_public_message("x" * 401, 100)


def test_sanitising_is_linear_on_hostile_text() -> None:
    hostile = [
        "a" * 399_000 + "@",  # one word, nearly all local part
        "a@" + "a." * 199_000,  # a long domain without a top-level part
        ("a@" * 199_000),
        "1" * 200_000 + "a" * 199_000,
        ":" * 399_000,
    ]
    for text in hostile:
        started = time.perf_counter()
        with contextlib.suppress(UpdateError):  # too long once cleaned: refused after the work
            sanitize_public_message(text, 100_000)
        assert time.perf_counter() - started < 2.0, text[:20]


def test_a_public_title_is_cleaned_on_one_line_and_capped() -> None:
    cleaned = clean_public_title("DB  upgrade\n  by ops@example.com\u202e")
    assert cleaned.text == f"DB upgrade by {REDACTED}" and cleaned.redactions == ("email",)
    with pytest.raises(UpdateError, match=r"^public_title: 201 characters, at most 200"):
        clean_public_title("x" * 201)
    with pytest.raises(UpdateError, match=r"^window_title: is empty"):
        clean_public_title("\u200b ", "window_title")
