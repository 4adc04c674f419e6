"""Status updates on an incident, their public message rules, and the no-update reminder.

Responders post updates (Statuspage's incident statuses: investigating, identified,
monitoring, resolved) with a message for the public. A message is cleaned before it is
stored (:func:`sanitize_public_message`); once an incident is resolved on the page only
further ``resolved`` updates (a follow-up) may be posted. A high-urgency incident with no
public update for the cadence configured per urgency reminds its responders
(:func:`next_reminder`).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from ..config.status_page import Reminders

__all__ = [
    "REDACTED",
    "IncidentStatus",
    "Sanitized",
    "StatusUpdate",
    "UpdateError",
    "clean_public_title",
    "next_reminder",
    "post_update",
    "sanitize_public_message",
]

IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved"]
STATUSES: tuple[IncidentStatus, ...] = ("investigating", "identified", "monitoring", "resolved")
REDACTED = "[redacted]"
MAX_TITLE_CHARS = 200

# Characters that hide or reorder text (bidi overrides and isolates, zero-width joiners).
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_WORDS = re.compile(r"(\s+)")
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+/=")
_PUNCTUATION = "()[]{}<>,;!?\"'`"
MIN_SECRET_CHARS = 32


class UpdateError(ValueError):
    """An update that cannot be posted; the message names the field."""


@dataclass(frozen=True)
class Sanitized:
    text: str
    redactions: tuple[str, ...]  # what was redacted, by kind: "email", "address", "secret"


def _internal_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not address.is_global


def _sensitive(core: str) -> str | None:
    """What kind of internal data a word is, if any (each check is linear in the word)."""
    if "@" in core and _EMAIL.fullmatch(core):
        return "email"
    host = core
    if host.count(":") == 1 and "." in host:  # an IPv4 address with a port
        host = host.split(":", 1)[0]
    if _internal_address(host.split("/", 1)[0]):
        return "address"
    if (
        len(core) >= MIN_SECRET_CHARS
        and all(c in _KEY_CHARS for c in core)
        and any(c.isdigit() for c in core)
        and any(c.isalpha() for c in core)
    ):
        return "secret"
    return None


def sanitize_public_message(text: str, max_chars: int, field: str = "message") -> Sanitized:
    """The public form of a message: Unicode NFC; control and invisible characters removed
    (newlines kept, tabs as spaces); trailing spaces and runs of blank lines trimmed; e-mail
    addresses, non-public IP addresses and secret-like words (32 or more letters, digits and
    ``_-+/=``, with both letters and digits) replaced by ``[redacted]``.
    Empty or longer than ``max_chars`` after that: :class:`UpdateError` naming ``field``.
    HTML is kept as text: the page escapes what it shows."""
    if len(text) > 4 * max_chars:  # refused before any work: the checks below are linear
        raise UpdateError(f"{field}: {len(text):,} characters, at most {max_chars:,}")
    cleaned = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\t", " ")
    cleaned = _INVISIBLE.sub("", cleaned)
    cleaned = "".join(c for c in cleaned if c == "\n" or unicodedata.category(c) != "Cc")
    lines = [line.rstrip() for line in cleaned.split("\n")]
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    redactions: list[str] = []
    words = _WORDS.split(cleaned)
    for index, word in enumerate(words):
        core = word.strip(_PUNCTUATION)
        if not core or core.isspace():
            continue
        trimmed = core.rstrip(".:")  # the end of a sentence, "at 10.0.0.7:"
        kind = _sensitive(trimmed) if trimmed else None
        if kind is None:
            kind = _sensitive(core)  # "fd00::" is an address whole
        else:
            core = trimmed
        if kind is not None:
            redactions.append(kind)
            words[index] = word.replace(core, REDACTED, 1)
    cleaned = "".join(words)
    if not cleaned:
        raise UpdateError(f"{field}: is empty (say what the public should know)")
    if len(cleaned) > max_chars:
        raise UpdateError(
            f"{field}: {len(cleaned):,} characters, at most {max_chars:,} "
            "(status_page.message_max_chars)"
        )
    return Sanitized(cleaned, tuple(redactions))


def clean_public_title(text: str, field: str = "public_title") -> Sanitized:
    """A title for the public (an incident's, a maintenance window's): cleaned as a message
    is, on one line, at most MAX_TITLE_CHARS; UpdateError naming ``field`` otherwise."""
    cleaned = sanitize_public_message(text, MAX_TITLE_CHARS, field)
    return Sanitized(" ".join(cleaned.text.split()), cleaned.redactions)


@dataclass(frozen=True)
class StatusUpdate:
    incident_id: str
    status: IncidentStatus
    message: str  # public, sanitized
    posted_by: str  # internal: never shown on the page
    posted_at: datetime
    public_title: str = ""  # the incident's public title as of this update


def post_update(
    previous: Sequence[StatusUpdate],
    *,
    incident_id: str,
    status: str,
    message: str,
    posted_by: str,
    now: datetime,
    max_chars: int,
    public_title: str = "",
) -> tuple[StatusUpdate, Sanitized]:
    """The next update of an incident (``previous``: its updates so far, oldest first)."""
    checked = next((s for s in STATUSES if s == status), None)
    if checked is None:
        raise UpdateError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    if not posted_by.strip():
        raise UpdateError("posted_by: is required")
    if previous and previous[-1].status == "resolved" and status != "resolved":
        raise UpdateError(
            f"status: the incident is resolved on the page; a follow-up is 'resolved', "
            f"not {status!r}"
        )
    if previous and now < previous[-1].posted_at:
        raise UpdateError("posted_at: before the incident's last update")
    title = public_title or (previous[-1].public_title if previous else "")
    if not title:
        raise UpdateError("public_title: the first update needs a title for the public")
    title = clean_public_title(title).text
    clean = sanitize_public_message(message, max_chars)
    update = StatusUpdate(incident_id, checked, clean.text, posted_by, now, title)
    return update, clean


def next_reminder(
    *,
    urgency: str,
    opened_at: datetime,
    resolved: bool,
    last_public_update_at: datetime | None,
    last_reminded_at: datetime | None,
    cadence: Reminders,
) -> datetime | None:
    """When the incident's responders are next reminded to post a public update: a cadence
    after the latest of its opening, its last public update and the last reminder; None when
    resolved or when its urgency has no cadence."""
    every: timedelta | None = getattr(cadence, urgency, None)
    if resolved or every is None:
        return None
    since = max(t for t in (opened_at, last_public_update_at, last_reminded_at) if t is not None)
    return since + every
