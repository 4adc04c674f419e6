"""Templates per channel (Jinja2 files in `templates/`), read well on a phone: what broke,
where, since when, how bad, the runbook, and the acknowledge/resolve links.

A channel uses `<channel>.subject.j2` / `<channel>.txt.j2` when present, else
`default.*.j2`; a reminder (not a page: e.g. no public status update for a while) uses
`<channel>.reminder.*.j2`, else `default.reminder.*.j2`. A directory named by
TOCSIN_NOTIFICATION_TEMPLATES overrides any of them.

The subject is plain text (each provider escapes it for where it goes). The text of a
channel that interprets markup (Slack mrkdwn, Teams markdown) is rendered from values
escaped for it (markup.py): alert-derived strings cannot add mentions, links or markup,
in these templates or in a user's own.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from tocsin_notification.markup import CHANNELS, Escape
from tocsin_notification.providers.base import IncidentLine

TEMPLATE_DIR = Path(__file__).parent / "templates"
RUNBOOK_LABELS = ("runbook_url", "runbook", "runbook-url", "runbookUrl", "playbook")


def runbook_of(labels: dict[str, str]) -> str:
    for name in RUNBOOK_LABELS:
        value = labels.get(name, "")
        if value.startswith(("http://", "https://")):
            return value
    return ""


class Renderer:
    def __init__(self, override_dir: str | None = None) -> None:
        override_dir = override_dir or os.environ.get("TOCSIN_NOTIFICATION_TEMPLATES")
        loaders: list[jinja2.BaseLoader] = []
        if override_dir:
            loaders.append(jinja2.FileSystemLoader(override_dir))
        loaders.append(jinja2.FileSystemLoader(str(TEMPLATE_DIR)))
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=False,  # plain text, mrkdwn, markdown: never HTML
            undefined=jinja2.StrictUndefined,
            trim_blocks=False,
            keep_trailing_newline=False,
        )
        self._cache: dict[tuple[str, str], jinja2.Template] = {}

    def _template(self, channel: str, part: str) -> jinja2.Template:
        key = (channel, part)
        template = self._cache.get(key)
        if template is None:
            template = self._env.select_template([f"{channel}.{part}.j2", f"default.{part}.j2"])
            self._cache[key] = template
        return template

    def render(
        self, channel: str, incidents: tuple[IncidentLine, ...], reminder: bool = False
    ) -> tuple[str, str]:
        """(subject, text) of one message listing `incidents` (reminders of them, with
        ``reminder``)."""
        prefix = "reminder." if reminder else ""
        plain: dict[str, Any] = {"incidents": [_line_context(i) for i in incidents]}
        subject = self._template(channel, f"{prefix}subject").render(plain).strip()
        escapes = CHANNELS.get(channel)
        escaped = plain
        if escapes is not None:
            escaped = {"incidents": [_line_context(i, *escapes) for i in incidents]}
        text = self._template(channel, f"{prefix}txt").render(escaped).strip()
        return " ".join(subject.split()), text


def _line_context(
    line: IncidentLine, text_escape: Escape | None = None, url_escape: Escape | None = None
) -> dict[str, Any]:
    # Its fields are strings: a shallow copy is what asdict's deep one would give.
    context: dict[str, Any] = dict(vars(line))
    if text_escape is not None and url_escape is not None:
        context = {
            name: url_escape(value) if name.endswith("_url") else text_escape(value)
            for name, value in context.items()
        }
    since = _parse(line.since)
    context["since_short"] = since.strftime("%H:%M UTC %b %d") if since else "unknown"
    context["since_spoken"] = since.strftime("%H %M UTC") if since else "an unknown time"
    return context


def _parse(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
