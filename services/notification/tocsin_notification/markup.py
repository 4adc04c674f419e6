r"""Escaping of alert-derived text for the channels that interpret markup (pure).

An alert's title, service, labels and runbook link come from whoever can send an alert.
Put as-is into a Slack or Teams message they could mention everyone (`<!channel>`), hide a
link behind innocent text (`<http://evil|Acknowledge>`, `[Acknowledge](http://evil)`) or
restyle the message. So every value a template receives for those channels is escaped:

- Slack mrkdwn: `&`, `<`, `>` as `&amp;`, `&lt;`, `&gt;` (Slack's documented escaping;
  without `<` no mention, channel ping or link can be formed). In a link target `|` is
  percent-encoded too, so a URL cannot supply its own label.
- Teams (MessageCard markdown, which also renders some HTML): `&`, `<`, `>` as entities,
  inline markdown (`\ ` * _ [ ] ( ) ~`) backslash-escaped, line breaks folded to spaces
  and a leading heading, list or quote marker escaped (only where a line starts do they
  mean anything). In a link target the characters
  that end or break a markdown link destination are percent-encoded.

Templates' own markup (`*{{ i.title }}*`, `[Runbook]({{ i.runbook_url }})`) stays markup.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Escape = Callable[[str], str]

_SLACK = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_SLACK_URL = str.maketrans({"&": "&amp;", "<": "%3C", ">": "%3E", "|": "%7C", " ": "%20"})
# Inline markup anywhere; block markers (heading, list, quote) only where a line starts.
_TEAMS_MARKDOWN = re.compile(r"([\\`*_\[\]()~])")
_TEAMS_LINE_START = re.compile(r"^(\s*\d*)([#>+\-.)])")
_TEAMS_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_TEAMS_URL = str.maketrans(
    {
        " ": "%20",
        "(": "%28",
        ")": "%29",
        "[": "%5B",
        "]": "%5D",
        "<": "%3C",
        ">": "%3E",
        '"': "%22",
        "'": "%27",
        "\\": "%5C",
        "`": "%60",
    }
)
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")


def slack_text(value: str) -> str:
    return value.translate(_SLACK)


def slack_url(value: str) -> str:
    return _LINE_BREAKS.sub("", value).translate(_SLACK_URL)


def teams_text(value: str) -> str:
    folded = _LINE_BREAKS.sub(" ", value)
    escaped = _TEAMS_MARKDOWN.sub(r"\\\1", folded)
    return _TEAMS_LINE_START.sub(r"\1\\\2", escaped).translate(_TEAMS_HTML)


def teams_url(value: str) -> str:
    return _LINE_BREAKS.sub("", value).translate(_TEAMS_URL)


def _same(value: str) -> str:
    return value


PLAIN: tuple[Escape, Escape] = (_same, _same)
# (text, url) escaping per channel; a channel not listed gets plain text as it is.
CHANNELS: dict[str, tuple[Escape, Escape]] = {
    "slack": (slack_text, slack_url),
    "teams": (teams_text, teams_url),
}


def for_channel(channel: str) -> tuple[Escape, Escape]:
    """(text, url) escaping for ``channel``."""
    return CHANNELS.get(channel, PLAIN)
