"""The exit codes of ``tocsin`` (docs/cli.md#exit-codes): scripts branch on them.

Usage errors are 2 as click makes them; the others say which kind of failure it was, so a
script can tell "log in again" (3) from "no such incident" (4) from "someone changed it
first" (5) from "the api is down" (6).
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    ERROR = 1  # the server (or Kafka) refused or failed; a check found problems; a bulk item failed
    USAGE = 2  # bad command line: unknown option, bad matcher, bad duration or time
    AUTH = (
        3  # no credential, an unusable one (401, a token file others can read) or forbidden (403)
    )
    NOT_FOUND = 4  # 404: no such incident/schedule/silence (or not visible to you)
    CONFLICT = 5  # 409/412: the incident changed first (stale ETag), a moot action, a busy group
    UNREACHABLE = 6  # the api (or Kafka) cannot be reached, or timed out
    RATE_LIMITED = 7  # 429: too many requests for this token; retry after the time it says


def exit_for_status(status: int) -> Exit:
    """The exit code for an HTTP error status of the api."""
    if status in (401, 403):
        return Exit.AUTH
    if status == 404:
        return Exit.NOT_FOUND
    if status in (409, 412):
        return Exit.CONFLICT
    if status == 429:
        return Exit.RATE_LIMITED
    if status in (502, 503, 504):
        return Exit.UNREACHABLE
    return Exit.ERROR


class CliError(Exception):
    """A failure to print as one line on stderr, ending the command with ``code``."""

    def __init__(self, message: str, code: Exit = Exit.ERROR) -> None:
        super().__init__(message)
        self.code = code
