"""The configuration model: one YAML file describing services, people and how to page them.

Every model is frozen (a loaded configuration is shared by coroutines and swapped as a whole
on reload, never edited in place) and forbids unknown fields (a misspelt field must be an
error, not a silently ignored setting). Checks that need only one object live here as
validators; checks that relate objects to each other (unknown ids, duplicates, cycles,
overlapping overrides) live in :mod:`tocsin_common.config.loader`, which also maps every
problem to a line of the file. See docs/configuration.md for the reference.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import re2
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..outgoing import parse_allow_rule
from ..validation import clip
from .durations import Duration, PositiveDuration

__all__ = [
    "BUILTIN_CONTACT_METHOD_TYPES",
    "BusinessCalendar",
    "ChangeFailure",
    "ContactMethod",
    "ContactMethodType",
    "EmailSettings",
    "EscalationLevel",
    "EscalationPolicy",
    "EscalationTarget",
    "FlapDetection",
    "Grouping",
    "Heartbeat",
    "InhibitRule",
    "Insight",
    "Integration",
    "IntegrationType",
    "Interruptions",
    "Layer",
    "Limits",
    "LinkSettings",
    "MaintenanceWindow",
    "Matcher",
    "NotificationRule",
    "NotificationRules",
    "NotificationSettings",
    "Oidc",
    "OidcGroupRole",
    "OutgoingSettings",
    "Override",
    "PriorityRule",
    "Recurrence",
    "RegexError",
    "Restriction",
    "Schedule",
    "Service",
    "Severity",
    "SeverityUrgency",
    "SlaPolicy",
    "Slo",
    "Team",
    "TocsinConfig",
    "TwilioSettings",
    "Urgency",
    "UrgencyRules",
    "User",
    "WebhookSettings",
    "Weekday",
    "WorkingHours",
    "compile_matcher_regex",
]

Severity = Literal["critical", "error", "warning", "info"]
Urgency = Literal["high", "low"]
IntegrationType = Literal["events_v2", "alertmanager", "grafana", "any"]
# The built-in channels; a contact method may also name the channel of a provider installed
# as its own package (entry point group `tocsin.providers`), so the type is any slug. Only
# notification knows what is installed: it refuses an unknown one at delivery.
BUILTIN_CONTACT_METHOD_TYPES = ("email", "sms", "voice", "slack", "teams", "webhook")


def _contact_method_type(value: str) -> str:
    if len(value) > 100 or not _SLUG_RE.match(value):
        raise ValueError(
            f"invalid contact method type {value!r}: one of "
            f"{', '.join(BUILTIN_CONTACT_METHOD_TYPES)}, or the channel name of an installed "
            "provider (lowercase letters, digits, '-' and '_')"
        )
    return value


ContactMethodType = Annotated[str, AfterValidator(_contact_method_type)]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)

# ---------------------------------------------------------------------------------------------
# Field types with their own checks (and messages a newcomer can act on)
# ---------------------------------------------------------------------------------------------

_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
_HHMM_RE = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")
_LABEL_RE = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")


def _slug(value: str) -> str:
    if len(value) > 100 or not _SLUG_RE.match(value):
        raise ValueError(
            f"invalid id {value!r}: use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit (at most 100 characters)"
        )
    return value


def _integration_key(value: str) -> str:
    if not _KEY_RE.match(value):
        raise ValueError(
            f"invalid integration key {value!r}: 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
        )
    return value


def _env_name(value: str) -> str:
    # These fields name an environment variable; the secret itself never goes in the file.
    if not _ENV_RE.match(value):
        raise ValueError(
            f"{value!r} is not an environment variable name (letters, digits and '_'); "
            "fields ending in _env name the variable that holds the secret, not the secret"
        )
    return value


def _email(value: str) -> str:
    if not _EMAIL_RE.match(value):
        raise ValueError(f"invalid email address {value!r}")
    return value


def _e164(value: str) -> str:
    if not _E164_RE.match(value):
        raise ValueError(f"invalid phone number {value!r}: use E.164 format, e.g. +15555550100")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"invalid URL {value!r}: expected an http:// or https:// URL")
    return value


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        hint = difflib.get_close_matches(value, sorted(available_timezones()), n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(
            f"unknown time zone {value!r}{suggestion}; use an IANA name such as 'Europe/Berlin'"
        ) from None
    return value


def _time_of_day(value: object) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, str):
        match = _HHMM_RE.match(value.strip())
        if match:
            return time(int(match.group(1)), int(match.group(2)))
    raise ValueError(
        f"invalid time of day {value!r}: expected 'HH:MM' (24-hour clock), e.g. '09:00'"
    )


def _weekday(value: object) -> object:
    # Day names are matched case-insensitively ("Monday" is as clear as "monday").
    return value.strip().lower() if isinstance(value, str) else value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{value.isoformat()} has no UTC offset; write it with one, "
            "e.g. 2026-12-01T02:00:00Z or 2026-12-01T03:00:00+01:00"
        )
    return value


def _naive(value: datetime) -> datetime:
    if value.tzinfo is not None:
        raise ValueError(
            f"{value.isoformat()} has a UTC offset; a layer start is a local time in the "
            "schedule's time_zone, write it without an offset, e.g. 2026-01-05T09:00:00"
        )
    return value


def _non_empty(value: tuple[Any, ...]) -> tuple[Any, ...]:
    # An AfterValidator rather than Field(min_length=1): pydantic also reports "too short"
    # for a one-item list whose item is invalid, which would be a misleading second error.
    if not value:
        raise ValueError("must not be empty (needs at least one entry)")
    return value


_T = TypeVar("_T")

NonEmpty = Annotated[tuple[_T, ...], AfterValidator(_non_empty)]
Slug = Annotated[str, AfterValidator(_slug)]
Ref = Annotated[str, Field(min_length=1)]
Name = Annotated[str, Field(min_length=1)]
IntegrationKey = Annotated[str, AfterValidator(_integration_key)]
EnvName = Annotated[str, AfterValidator(_env_name)]
Email = Annotated[str, AfterValidator(_email)]
PhoneNumber = Annotated[str, AfterValidator(_e164)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
TimeZone = Annotated[str, AfterValidator(_time_zone)]
TimeOfDay = Annotated[time, BeforeValidator(_time_of_day)]
Day = Annotated[Weekday, BeforeValidator(_weekday)]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
LocalDatetime = Annotated[datetime, AfterValidator(_naive)]


class _Model(BaseModel):
    """Base of every configuration model: frozen, strict about unknown fields."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        # YAML reads `id: 1234` or an all-digit key as a number; they are still ids.
        coerce_numbers_to_str=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        # `overrides:` with nothing under it is YAML null; treat an empty optional field as
        # absent (its default) instead of failing with "Input should be a valid tuple".
        if not isinstance(data, dict):
            return data
        optional = set()
        for name, info in cls.model_fields.items():
            if not info.is_required():
                optional.add(name)
                if info.alias:
                    optional.add(info.alias)
        return {k: v for k, v in data.items() if not (v is None and k in optional)}


# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------


class Integration(_Model):
    """An integration key (routing key) through which a monitoring tool sends to a service."""

    key: IntegrationKey
    type: IntegrationType = "any"
    name: str = ""
    rate_limit_per_minute: int = Field(default=1200, ge=1)

    def accepts(self, fmt: str) -> bool:
        """Whether events in format ``fmt`` (events_v2, alertmanager, grafana) may use this key."""
        return self.type == "any" or self.type == fmt


# Fields of a normalized alert that grouping can use; labels.* and details.* take a sub-key.
GROUPING_FIELDS: frozenset[str] = frozenset(
    {"summary", "source", "severity", "component", "group", "class", "dedup_key"}
)
GROUPING_MAPS: frozenset[str] = frozenset({"labels", "details"})


def _grouping_field(value: str) -> str:
    head, dot, rest = value.partition(".")
    if head in GROUPING_MAPS and dot and rest:
        return value
    if head in GROUPING_FIELDS and not dot:
        return value
    allowed = ", ".join(sorted(GROUPING_FIELDS)) + ", labels.<name>, details.<name>"
    raise ValueError(f"unknown alert field {value!r}: expected one of {allowed}")


class Grouping(_Model):
    """How alerts of a service are grouped into incidents.

    ``none``: one incident per alert. ``content``: alerts with equal values of ``fields``
    join the same open incident if it was opened less than ``window`` ago. ``time``: every
    alert of the service joins the open incident opened less than ``window`` ago. An
    incident takes at most ``max_alerts`` alerts: the group's next alert opens a new one (an
    alert storm is still a few incidents, each small enough to handle and to send).
    """

    mode: Literal["none", "content", "time"] = "none"
    fields: tuple[Annotated[str, AfterValidator(_grouping_field)], ...] = Field(
        default=(), validate_default=True
    )
    window: PositiveDuration = timedelta(minutes=5)
    max_alerts: int = Field(default=1000, ge=1, le=10_000)

    @field_validator("fields")
    @classmethod
    def _fields_match_mode(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        mode = info.data.get("mode")
        if mode == "content" and not value:
            raise ValueError("mode 'content' needs at least one field to group by")
        if mode in ("none", "time") and value:
            raise ValueError(f"fields only apply to mode 'content' (mode is {mode!r})")
        return value


class FlapDetection(_Model):
    """Flap detection of a service's alerts (Nagios' algorithm, see correlation's
    flapping.py): an alert starts flapping when its weighted percent state change rises above
    ``high_threshold`` and stops when it falls below ``low_threshold``."""

    enabled: bool = True
    high_threshold: float = Field(default=50.0, gt=0, le=100)
    low_threshold: float = Field(default=25.0, ge=0, lt=100)

    @field_validator("low_threshold")
    @classmethod
    def _below_high(cls, value: float, info: ValidationInfo) -> float:
        high = info.data.get("high_threshold")
        if high is not None and value >= high:
            raise ValueError(
                f"must be below high_threshold ({high:g}): flapping stops below the low "
                "threshold and starts above the high one"
            )
        return value


# Matcher regexes are user input (silences, inhibition rules): they run on RE2, whose time
# is linear in the text, never on Python's backtracking `re` (`(a|a)*b` against 24 a's takes
# ~1 s there, doubling with every character). RE2 refuses what it cannot do in linear time
# (backreferences, lookaround) when the matcher is created. `.` matches a newline too, and
# nothing is captured (a match only needs the DFA).
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.dot_nl = True
_RE2_OPTIONS.never_capture = True
_RE2_OPTIONS.log_errors = False  # the error is raised, naming the matcher; not logged to stderr
# Compiled programs are cached (here and in google-re2), so a caller taking values from
# clients gives Matcher a `max_value_chars` validation context: a value over it is refused
# before it is compiled (see tocsin_correlation.matchers.parse_matcher).


class RegexError(ValueError):
    """A pattern RE2 does not accept; the message says why."""


def _re2_compile(pattern: str) -> Any:
    try:
        return re2.compile(f"(?:{pattern})", _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(clip(str(reason))) from None


@functools.lru_cache(maxsize=1024)
def compile_matcher_regex(pattern: str) -> Any:
    """The RE2 program of a matcher regex; its ``fullmatch`` anchors it at both ends, as
    Alertmanager does. Raises :class:`RegexError` for a pattern RE2 refuses."""
    return _re2_compile(pattern)


# Linear on any input: the value is everything after the operator, stripped in Python (a lazy
# `.*?` followed by `\s*$` backtracks quadratically over a long run of spaces).
_MATCHER_RE = re.compile(r"^\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(=~|=|!=|!~)(.*)$", re.DOTALL)


def _unquote_matcher_value(raw: str) -> str:
    # Same rules as Alertmanager's matcher parser: an optional pair of double quotes, \" \\ \n
    # escapes, any other backslash kept literally (so regexes like "a\.b" work unchanged).
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    out: list[str] = []
    escaped = False
    closed = False
    for i, char in enumerate(body):
        if closed:
            raise ValueError(f"unexpected text after the closing quote in {raw!r}")
        if escaped:
            escaped = False
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(char, "\\" + char))
            continue
        if char == "\\" and i < len(body) - 1:
            escaped = True
        elif char == '"':
            if not quoted or i < len(body) - 1:
                raise ValueError(f"matcher value contains an unescaped double quote: {raw!r}")
            closed = True
        else:
            out.append(char)
    if quoted and not closed:
        raise ValueError(f"matcher value is missing its closing double quote: {raw!r}")
    return "".join(out)


class Matcher(_Model):
    """An Alertmanager label matcher such as ``severity=~"warning|info"``.

    In the file it is written as a string ``name op "value"`` (op is ``=``, ``!=``, ``=~`` or
    ``!~``); regexes are RE2 (linear time), anchored at both ends, as in Alertmanager. A
    missing label matches as the empty string.
    """

    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        match = _MATCHER_RE.match(data)
        if match is None:
            raise ValueError(
                f'invalid matcher {data!r}: expected label op "value" with op one of '
                '= != =~ !~, e.g. severity="critical"'
            )
        name, op, raw = match.groups()
        return {"name": name, "op": op, "value": _unquote_matcher_value(raw.strip())}

    @field_validator("name")
    @classmethod
    def _label_name(cls, value: str) -> str:
        if not _LABEL_RE.match(value):
            raise ValueError(f"invalid label name {value!r}")
        return value

    @field_validator("value")
    @classmethod
    def _regex_compiles(cls, value: str, info: ValidationInfo) -> str:
        cap = (info.context or {}).get("max_value_chars")
        if cap is not None and len(value) > cap:
            raise ValueError(
                f"value of {len(value):,} characters is over the limit of {cap:,} "
                "(limits.matcher_value_max_chars)"
            )
        if info.data.get("op") in ("=~", "!~"):
            try:
                compile_matcher_regex(value)
            except RegexError as exc:
                raise ValueError(
                    f"invalid regular expression {clip(value)!r}: {exc} (matchers use RE2 syntax: "
                    "no backreferences or lookaround, repetition counts up to 1000)"
                ) from None
        return value

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a label set satisfies this matcher."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = compile_matcher_regex(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


class InhibitRule(_Model):
    """While an alert matching ``source_matchers`` fires, alerts matching ``target_matchers``
    that have equal values for every label in ``equal`` are suppressed (as in Alertmanager)."""

    source_matchers: NonEmpty[Matcher]
    target_matchers: NonEmpty[Matcher]
    equal: tuple[str, ...] = ()


class SeverityUrgency(_Model):
    """The urgency used for an alert of each severity."""

    critical: Urgency = "high"
    error: Urgency = "high"
    warning: Urgency = "low"
    info: Urgency = "low"


class UrgencyRules(_Model):
    """Urgency of an incident: from the severity of its alert, else ``default``."""

    default: Urgency = "high"
    by_severity: SeverityUrgency = Field(default_factory=SeverityUrgency)

    def for_severity(self, severity: str | None) -> Urgency:
        """The urgency of an alert with this severity (``default`` when unknown or absent)."""
        if severity in ("critical", "error", "warning", "info"):
            result: Urgency = getattr(self.by_severity, severity)
            return result
        return self.default


class MaintenanceWindow(_Model):
    """A planned period during which the service's alerts are recorded but never page."""

    start: AwareDatetime
    end: AwareDatetime
    description: str = ""

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError("end must be after start")
        return value

    def active_at(self, at: datetime) -> bool:
        """Whether the (timezone-aware) instant ``at`` falls in ``[start, end)``."""
        return self.start <= at < self.end


class Service(_Model):
    """A thing that can break: alerts for it arrive through its integrations and page through
    its escalation policy."""

    id: Slug
    name: Name
    description: str = ""
    team: Ref | None = None  # the owning team: its roles reach this service (else admins)
    escalation_policy: Ref
    integrations: tuple[Integration, ...] = ()
    grouping: Grouping = Field(default_factory=Grouping)
    inhibit_rules: tuple[InhibitRule, ...] = ()
    depends_on: tuple[Ref, ...] = ()
    ack_timeout: PositiveDuration | None = None
    auto_resolve_timeout: PositiveDuration | None = None
    urgency: UrgencyRules = Field(default_factory=UrgencyRules)
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()
    change_lookback: Duration = timedelta(hours=1)
    flapping: FlapDetection = Field(default_factory=FlapDetection)

    def in_maintenance(self, at: datetime) -> bool:
        """Whether any maintenance window of this service covers ``at``."""
        return any(w.active_at(at) for w in self.maintenance_windows)


class Heartbeat(_Model):
    """A monitor that expects a ping every ``interval``; after ``interval + grace`` without
    one it triggers an alert on ``service``, and the next ping resolves it."""

    id: Slug
    service: Ref
    interval: PositiveDuration
    grace: Duration = timedelta(0)
    summary: str = ""
    severity: Severity = "critical"

    @property
    def alert_summary(self) -> str:
        """The summary of the alert raised when a ping is missed."""
        return self.summary or f"Heartbeat {self.id} did not check in"


# ---------------------------------------------------------------------------------------------
# People
# ---------------------------------------------------------------------------------------------


class Team(_Model):
    """A named group of users; as an escalation target it means every member.

    Roles are held on a team (docs/security.md): members are responders, ``managers`` hold
    the manager role and ``viewers`` may only read; the team's services, their incidents,
    schedules and silences are what those roles reach. Managers and viewers need not be
    members (members are who the team pages)."""

    id: Slug
    name: Name
    members: NonEmpty[Ref]
    managers: tuple[Ref, ...] = ()
    viewers: tuple[Ref, ...] = ()


_ADDRESS_CHECKS = {
    "email": _email,
    "sms": _e164,
    "voice": _e164,
    "slack": _http_url,
    "teams": _http_url,
    "webhook": _http_url,
}


class ContactMethod(_Model):
    """One way to reach a user: an email address, a phone number (sms/voice, E.164) or an
    incoming-webhook URL (slack/teams/webhook).

    ``unsigned: true`` (webhook only) says, explicitly, that pages to this webhook may go
    out without the HMAC signature; without it a webhook needs the signing secret (the
    loader refuses it when ``notification.webhook.signing_secret_env`` is empty,
    notification refuses to start when that variable is unset)."""

    id: Slug
    type: ContactMethodType
    address: str
    name: str = ""
    unsigned: bool = False

    @field_validator("address")
    @classmethod
    def _address_fits_type(cls, value: str, info: ValidationInfo) -> str:
        check = _ADDRESS_CHECKS.get(str(info.data.get("type")))
        return check(value) if check is not None else value

    @field_validator("unsigned")
    @classmethod
    def _unsigned_only_for_webhooks(cls, value: bool, info: ValidationInfo) -> bool:
        kind = info.data.get("type")
        if value and kind is not None and kind != "webhook":
            raise ValueError(
                f"only a webhook contact method can be unsigned (this one is {kind!r}); "
                "remove the field"
            )
        return value


class NotificationRule(_Model):
    """Notify on ``contact_method`` (an id of the same user) ``delay`` after being paged."""

    delay: Duration = timedelta(0)
    contact_method: Ref


class NotificationRules(_Model):
    """A user's notification rules for each urgency. A user with no rule for an urgency is
    not notified at that urgency."""

    high: tuple[NotificationRule, ...] = ()
    low: tuple[NotificationRule, ...] = ()

    def for_urgency(self, urgency: Urgency) -> tuple[NotificationRule, ...]:
        """The rules that apply at ``urgency``."""
        return self.high if urgency == "high" else self.low


class User(_Model):
    """A person who can be paged."""

    id: Slug
    name: Name
    email: Email
    time_zone: TimeZone = "UTC"
    contact_methods: tuple[ContactMethod, ...] = ()
    notification_rules: NotificationRules = Field(default_factory=NotificationRules)

    @property
    def zone(self) -> ZoneInfo:
        """The user's time zone."""
        return ZoneInfo(self.time_zone)


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


class Restriction(_Model):
    """Limits a layer to part of the day (``daily``) or week (``weekly``). An ``end`` at or
    before ``start`` wraps past midnight (daily) or past the end of the week (weekly)."""

    type: Literal["daily", "weekly"]
    start_day: Day | None = Field(default=None, validate_default=True)
    start: TimeOfDay
    end_day: Day | None = Field(default=None, validate_default=True)
    end: TimeOfDay

    @field_validator("start_day", "end_day")
    @classmethod
    def _days_match_type(cls, value: Weekday | None, info: ValidationInfo) -> Weekday | None:
        kind = info.data.get("type")
        if kind == "weekly" and value is None:
            raise ValueError(f"a weekly restriction needs {info.field_name}")
        if kind == "daily" and value is not None:
            raise ValueError(f"{info.field_name} only applies to weekly restrictions")
        return value

    @field_validator("end")
    @classmethod
    def _not_empty(cls, value: time, info: ValidationInfo) -> time:
        if info.data.get("start") == value and info.data.get("start_day") == info.data.get(
            "end_day"
        ):
            raise ValueError(
                "end equals start, which is ambiguous; to be on call all the time, "
                "leave out the restriction"
            )
        return value


_ROTATION_TURNS: dict[str, timedelta] = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
}


class Layer(_Model):
    """A rotation of users. Handoffs happen every turn from ``start`` (a local time in the
    schedule's zone); daily and weekly turns keep the same wall-clock time across DST."""

    name: str = ""
    start: LocalDatetime
    rotation: Literal["hourly", "daily", "weekly", "custom"]
    turn_length: PositiveDuration | None = Field(default=None, validate_default=True)
    users: NonEmpty[Ref]
    on_call_at_once: int = Field(default=1, ge=1, validate_default=True)
    restrictions: tuple[Restriction, ...] = ()

    @field_validator("turn_length")
    @classmethod
    def _turn_for_custom(cls, value: timedelta | None, info: ValidationInfo) -> timedelta | None:
        rotation = info.data.get("rotation")
        if rotation == "custom" and value is None:
            raise ValueError("rotation 'custom' needs turn_length")
        if rotation in _ROTATION_TURNS and value is not None:
            raise ValueError(
                f"turn_length only applies to rotation 'custom' (rotation is {rotation!r})"
            )
        return value

    @field_validator("on_call_at_once")
    @classmethod
    def _enough_users(cls, value: int, info: ValidationInfo) -> int:
        users = info.data.get("users")
        if users is not None and value > len(set(users)):
            raise ValueError(
                f"on_call_at_once is {value} but the layer has only "
                f"{len(set(users))} distinct user(s)"
            )
        return value

    @property
    def turn(self) -> timedelta:
        """The length of one turn (nominal: a daily turn is one calendar day in local time)."""
        if self.turn_length is not None:
            return self.turn_length
        return _ROTATION_TURNS[self.rotation]


class Override(_Model):
    """``user`` is on call in the schedule from ``start`` to ``end``, replacing the layers."""

    user: Ref
    start: AwareDatetime
    end: AwareDatetime

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError("end must be after start")
        return value


class Schedule(_Model):
    """Who is on call when: layers (later ones win), then overrides (win over all)."""

    id: Slug
    name: Name
    description: str = ""
    team: Ref | None = None  # owning team, besides those of the services it pages for
    time_zone: TimeZone
    layers: NonEmpty[Layer]
    overrides: tuple[Override, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone, in which layer starts and restrictions are read."""
        return ZoneInfo(self.time_zone)


# ---------------------------------------------------------------------------------------------
# Escalation
# ---------------------------------------------------------------------------------------------


class EscalationTarget(_Model):
    """Whom a level pages: a user, whoever is on call in a schedule, or every team member."""

    type: Literal["user", "schedule", "team"]
    id: Ref


class EscalationLevel(_Model):
    """Page every target, then wait ``delay`` for an acknowledgement before the next level."""

    delay: PositiveDuration
    targets: NonEmpty[EscalationTarget]


class EscalationPolicy(_Model):
    """Ordered levels; after the last level the whole policy runs again ``repeat`` times."""

    id: Slug
    name: Name
    description: str = ""
    repeat: int = Field(default=0, ge=0, le=100)
    levels: NonEmpty[EscalationLevel]


# ---------------------------------------------------------------------------------------------
# Delivery settings
# ---------------------------------------------------------------------------------------------


class EmailSettings(_Model):
    """SMTP server used for email contact methods."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    username: str | None = None
    password_env: EnvName | None = None
    from_: Email = Field(default="tocsin@localhost", alias="from")


class TwilioSettings(_Model):
    """Twilio-compatible REST API used for sms and voice contact methods."""

    base_url: HttpUrl = "https://api.twilio.com"
    account_sid: str = ""
    auth_token_env: EnvName = "TWILIO_AUTH_TOKEN"
    from_number: str = ""

    @field_validator("from_number")
    @classmethod
    def _from_number(cls, value: str) -> str:
        return _e164(value) if value else value


class WebhookSettings(_Model):
    """Generic webhook delivery: bodies are signed with HMAC-SHA256 using the secret in
    this variable (or the file named by ``<variable>_FILE``). Empty (``""``): no signing
    secret, and then every webhook contact method must say ``unsigned: true``. (Null, as
    for every optional field, means the default.)"""

    signing_secret_env: EnvName | Literal[""] = "TOCSIN_WEBHOOK_SECRET"


def _allow_entry(value: str) -> str:
    parse_allow_rule(value)  # ValueError naming the entry and what is wrong
    return value


class OutgoingSettings(_Model):
    """Outgoing HTTP requests (webhook, Slack, Teams, Twilio): destinations that resolve
    to loopback, private, link-local, CGNAT, multicast or reserved addresses are refused
    unless listed here (an address or CIDR network, optionally with a port:
    ``127.0.0.1:9999``, ``10.0.0.0/8``, ``[::1]:9999``). See tocsin_common.outgoing."""

    allow: tuple[Annotated[str, AfterValidator(_allow_entry)], ...] = Field(
        default=(), max_length=1000
    )


class LinkSettings(_Model):
    """Signed acknowledge/resolve links carried by every page. The keys are read at start
    from `signing_keys_env` (a key ring `kid:secret,...`, current first) or, for one key,
    `signing_secret_env`; either also as `<NAME>_FILE`. One of them is required."""

    signing_keys_env: EnvName = "TOCSIN_LINK_KEYS"
    signing_secret_env: EnvName = "TOCSIN_LINK_SECRET"
    ttl: PositiveDuration = timedelta(hours=24)

    @model_validator(mode="after")
    def _distinct_names(self) -> LinkSettings:
        if self.signing_keys_env == self.signing_secret_env:
            raise ValueError(
                f"signing_keys_env, signing_secret_env: both name {self.signing_keys_env}; "
                "a key ring and a lone secret need different variables"
            )
        return self


class NotificationSettings(_Model):
    """Delivery providers' settings; every part is optional."""

    email: EmailSettings = Field(default_factory=EmailSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    links: LinkSettings = Field(default_factory=LinkSettings)
    outgoing: OutgoingSettings = Field(default_factory=OutgoingSettings)


class Limits(_Model):
    """Caps on what clients store at runtime (silences, snoozes, notes): every user-supplied
    collection and string is bounded (SPEC §10). A request over a cap is refused with an
    error naming the field, the cap and this setting (see :mod:`tocsin_common.limits`)."""

    silence_max_matchers: int = Field(default=32, ge=1, le=1000)
    label_name_max_chars: int = Field(default=128, ge=1, le=10_000)
    matcher_value_max_chars: int = Field(default=1000, ge=1, le=100_000)
    silence_comment_max_chars: int = Field(default=1000, ge=0, le=100_000)
    identifier_max_chars: int = Field(default=128, ge=1, le=10_000)
    active_silences_per_service: int = Field(default=1000, ge=1, le=100_000)
    silence_retention: Duration = timedelta(days=5)
    snooze_max: PositiveDuration = timedelta(days=7)
    note_max_chars: int = Field(default=10_000, ge=1, le=1_000_000)
    resolved_incident_retention: PositiveDuration = timedelta(days=7)
    watch_backlog: int = Field(default=100_000, ge=1000, le=10_000_000)


# ---------------------------------------------------------------------------------------------
# Insight: business calendars, priorities, SLAs, SLOs, recurrence (docs/insight.md)
# ---------------------------------------------------------------------------------------------

_PRIORITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _priority_id(value: str) -> str:
    if not _PRIORITY_RE.match(value):
        raise ValueError(
            f"invalid priority id {value!r}: 1 to 32 letters, digits, '-' and '_', "
            "starting with a letter or digit, e.g. 'P1'"
        )
    return value


def _calendar_date(value: object) -> object:
    # A holiday is a calendar date. YAML may hand over a date already; a string must be
    # YYYY-MM-DD (pydantic alone would also take a number as a Unix timestamp).
    if isinstance(value, datetime):
        raise ValueError(
            f"{value.isoformat()} is a date and time; a holiday is a date such as 2026-12-25"
        )
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE_RE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"invalid date {value!r}: expected YYYY-MM-DD, e.g. 2026-12-25")


PriorityId = Annotated[str, AfterValidator(_priority_id)]
CalendarDate = Annotated[date, BeforeValidator(_calendar_date)]


class WorkingHours(_Model):
    """Business hours on ``days``: from ``start`` to ``end`` in the calendar's time zone. An
    ``end`` at or before ``start`` runs to that time of the next day (``22:00``-``06:00`` is a
    night shift, ``00:00``-``00:00`` a whole day); the hours belong to the day they start on."""

    days: NonEmpty[Day]
    start: TimeOfDay
    end: TimeOfDay


class BusinessCalendar(_Model):
    """When a team works: weekly hours in a time zone, minus holidays (whole local days: a
    holiday cancels the working hours that start on it). SLA clocks in business time only
    run inside these hours (see tocsin_insight.domain.calendar)."""

    id: Slug
    name: str = ""
    time_zone: TimeZone
    teams: tuple[Ref, ...] = ()
    hours: NonEmpty[WorkingHours]
    holidays: tuple[CalendarDate, ...] = Field(default=(), max_length=10_000)


class PriorityRule(_Model):
    """Priority ``id`` for incidents that match every non-empty criterion. Rules are tried in
    order, first match wins, and the order is the ranking (the first rule is the highest
    priority; several rules may give one priority, which ranks where its first rule is). An
    empty criterion matches anything."""

    id: PriorityId
    severities: tuple[Severity, ...] = ()
    urgencies: tuple[Urgency, ...] = ()
    services: tuple[Ref, ...] = ()
    matchers: tuple[Matcher, ...] = Field(default=(), max_length=32)

    def matches(
        self,
        service_id: str,
        severity: str | None,
        urgency: str | None,
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        """Whether an incident of ``service_id`` with this severity, urgency and labels (of
        the alert that opened it) matches."""
        return (
            (not self.severities or severity in self.severities)
            and (not self.urgencies or urgency in self.urgencies)
            and (not self.services or service_id in self.services)
            and all(m.matches(labels or {}) for m in self.matchers)
        )


def _sla_calendar(value: str) -> str:
    if value in ("24x7", "business"):
        return value
    return _slug(value)


class SlaPolicy(_Model):
    """Targets for incidents of one priority: acknowledged within ``ack_target`` and resolved
    within ``resolve_target`` of being created, counted on ``calendar``: ``24x7`` (wall
    clock), ``business`` (the calendar of the team that owns the incident's service, else
    ``insight.default_calendar``) or the id of a calendar."""

    priority: PriorityId
    ack_target: PositiveDuration | None = None
    resolve_target: PositiveDuration | None = None
    calendar: Annotated[str, AfterValidator(_sla_calendar)] = "24x7"

    @model_validator(mode="after")
    def _some_target(self) -> SlaPolicy:
        if self.ack_target is None and self.resolve_target is None:
            raise ValueError(
                "ack_target, resolve_target: set at least one (a policy without targets "
                "measures nothing)"
            )
        return self


def _availability_target(value: float) -> float:
    if not 0 < value < 100:
        raise ValueError(f"{value!r} is not a percentage between 0 and 100 (exclusive), e.g. 99.9")
    return value


def _whole_days(value: timedelta) -> timedelta:
    if value % timedelta(days=1) or value > timedelta(days=366):
        raise ValueError(f"{value} is not a whole number of days from 1d to 366d, e.g. 30d")
    return value


class Slo(_Model):
    """Service level objective of a service: ``availability_target`` percent of the rolling
    ``window`` without impact (impact weighted: major 1, partial 0.5, degraded 0.25)."""

    service: Ref
    availability_target: Annotated[float, AfterValidator(_availability_target)]
    window: Annotated[PositiveDuration, AfterValidator(_whole_days)] = timedelta(days=30)


class Recurrence(_Model):
    """A problem is opened when one service has ``min_incidents`` incidents of the same
    fingerprint (group key, else dedup key) within ``window``."""

    min_incidents: int = Field(default=3, ge=2, le=1000)
    window: Annotated[PositiveDuration, AfterValidator(_whole_days)] = timedelta(days=30)


class ChangeFailure(_Model):
    """A change failed when an incident opens on its service (or, with
    ``include_dependents``, on a service that depends on it) within ``window`` after it."""

    window: PositiveDuration = timedelta(hours=1)
    include_dependents: bool = True


class Interruptions(_Model):
    """What counts as an interruption (PagerDuty's definition): a notification on one of
    ``channels``; those to one person less than ``merge_window`` after the first of a burst
    count once."""

    channels: tuple[ContactMethodType, ...] = ("sms", "voice", "slack", "teams")
    merge_window: Duration = timedelta(seconds=60)


class Insight(_Model):
    """Settings of the insight service's reports: calendars, priorities, SLAs and SLOs."""

    time_zone: TimeZone = "UTC"
    calendars: tuple[BusinessCalendar, ...] = ()
    default_calendar: Ref | None = None
    priorities: tuple[PriorityRule, ...] = ()
    sla_policies: tuple[SlaPolicy, ...] = ()
    slos: tuple[Slo, ...] = ()
    recurrence: Recurrence = Field(default_factory=Recurrence)
    change_failure: ChangeFailure = Field(default_factory=ChangeFailure)
    interruptions: Interruptions = Field(default_factory=Interruptions)

    def priority_for(
        self,
        service_id: str,
        severity: str | None,
        urgency: str | None,
        labels: Mapping[str, str] | None = None,
    ) -> str | None:
        """The priority of an incident: the first matching rule's id, or None."""
        for rule in self.priorities:
            if rule.matches(service_id, severity, urgency, labels):
                return rule.id
        return None

    def priority_rank(self, priority: str) -> int | None:
        """1 for the highest priority (the first rule's), 2 for the next distinct one...;
        None if unknown."""
        order = list(dict.fromkeys(rule.id for rule in self.priorities))
        return order.index(priority) + 1 if priority in order else None

    def sla_policy(self, priority: str | None) -> SlaPolicy | None:
        """The SLA policy of a priority, or None."""
        return next((p for p in self.sla_policies if p.priority == priority), None)

    def calendar(self, calendar_id: str) -> BusinessCalendar:
        """The calendar with this id (KeyError when unknown)."""
        for item in self.calendars:
            if item.id == calendar_id:
                return item
        raise KeyError(f"unknown calendar {calendar_id!r}")

    def team_calendar(self, team_id: str | None) -> BusinessCalendar | None:
        """A team's business calendar: the one listing the team, else ``default_calendar``."""
        if team_id is not None:
            for item in self.calendars:
                if team_id in item.teams:
                    return item
        if self.default_calendar is not None:
            return self.calendar(self.default_calendar)
        return None

    def sla_calendar(self, policy: SlaPolicy, team_id: str | None) -> BusinessCalendar | None:
        """The calendar a policy's clocks run on for a team's incident; None means 24x7."""
        if policy.calendar == "24x7":
            return None
        if policy.calendar == "business":
            return self.team_calendar(team_id)
        return self.calendar(policy.calendar)

    def slo(self, service_id: str) -> Slo | None:
        """The SLO of a service, or None."""
        return next((s for s in self.slos if s.service == service_id), None)


# ---------------------------------------------------------------------------------------------
# The whole file
# ---------------------------------------------------------------------------------------------


def _first_by_id(items: tuple[Any, ...]) -> dict[str, Any]:
    # First definition wins; the loader reports later duplicates as errors.
    index: dict[str, Any] = {}
    for item in items:
        index.setdefault(item.id, item)
    return index


# ---------------------------------------------------------------------------------------------
# Access (docs/security.md)
# ---------------------------------------------------------------------------------------------


class TeamRoleGrant(_Model):
    """A role held on a team."""

    team: Ref
    role: Literal["viewer", "responder", "manager"]


class ServiceAccount(_Model):
    """A tool that calls Tocsin's APIs with a token of its own (CI, a chat bot, a script)."""

    id: Slug
    name: Name
    roles: tuple[TeamRoleGrant, ...] = ()
    admin: bool = False


class OidcGroupRole(_Model):
    """Members of the identity provider's ``group`` hold ``role`` on ``team``."""

    group: Name
    team: Ref
    role: Literal["viewer", "responder", "manager"]


_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _issuer_url(value: str) -> str:
    parts = urlsplit(_http_url(value))
    if parts.scheme != "https" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError(
            f"issuer {value!r} is not https: the provider's keys and tokens must not travel "
            "in the clear (plain http is accepted for localhost only, for tests)"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"issuer {value!r} must have no query or fragment")
    return value.rstrip("/")


def _claim_name(value: str) -> str:
    if not value.strip() or value != value.strip():
        raise ValueError(f"invalid claim name {value!r}: a non-empty name without spaces")
    return value


ClaimName = Annotated[str, AfterValidator(_claim_name)]
# Asymmetric signatures only: a shared-secret (HS*) or unsigned ("none") token is refused.
OidcAlgorithm = Literal["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class Oidc(_Model):
    """People log in with an OpenID Connect provider (docs/security.md#oidc): the ID token
    it issues is a bearer credential; its ``username_claim`` names a configured user (by id,
    else by email) and its ``groups_claim`` adds roles on teams."""

    issuer: Annotated[str, AfterValidator(_issuer_url)]
    client_id: Name
    client_secret_env: EnvName | None = None  # confidential clients only (the console)
    audience: Name | None = None  # default: client_id
    scopes: tuple[Name, ...] = ("openid", "profile", "email", "groups")
    username_claim: ClaimName = "preferred_username"
    groups_claim: ClaimName = "groups"
    group_roles: tuple[OidcGroupRole, ...] = ()
    admin_groups: tuple[Name, ...] = ()
    algorithms: tuple[OidcAlgorithm, ...] = ("RS256", "ES256")
    leeway: Duration = timedelta(seconds=30)
    jwks_refresh_interval: PositiveDuration = timedelta(seconds=30)

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("must include 'openid' (an OpenID Connect login asks for it)")
        return value

    @field_validator("algorithms")
    @classmethod
    def _some_algorithm(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _non_empty(value)

    @field_validator("leeway")
    @classmethod
    def _small_leeway(cls, value: timedelta) -> timedelta:
        if value > timedelta(minutes=5):
            raise ValueError(
                f"{value} is too long: the leeway only absorbs clock skew (at most 5m)"
            )
        return value

    @property
    def expected_audience(self) -> str:
        return self.audience or self.client_id


class Access(_Model):
    """Who holds the global admin role, the service accounts, and the OIDC login."""

    admins: tuple[Ref, ...] = ()
    service_accounts: tuple[ServiceAccount, ...] = ()
    oidc: Oidc | None = None


# Sections kept in modules of their own; they build on the field types above, hence here.
from .automation import Automation  # noqa: E402
from .change_control import ChangeControl  # noqa: E402
from .status_page import StatusPage  # noqa: E402


class TocsinConfig(_Model):
    """The whole configuration file. Look objects up with the index helpers
    (:meth:`service`, :meth:`user`, ...), which raise :class:`KeyError` for unknown ids."""

    version: Literal[1]
    services: tuple[Service, ...] = ()
    heartbeats: tuple[Heartbeat, ...] = ()
    teams: tuple[Team, ...] = ()
    users: tuple[User, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    escalation_policies: tuple[EscalationPolicy, ...] = ()
    change_control: ChangeControl = Field(default_factory=ChangeControl)
    automation: Automation = Field(default_factory=Automation)
    status_page: StatusPage = Field(default_factory=StatusPage)
    notification: NotificationSettings = Field(default_factory=NotificationSettings)
    access: Access = Field(default_factory=Access)
    limits: Limits = Field(default_factory=Limits)
    insight: Insight = Field(default_factory=Insight)

    # Built once after validation; the model is frozen so they never go stale.
    _services: dict[str, Service] = PrivateAttr(default_factory=dict)
    _heartbeats: dict[str, Heartbeat] = PrivateAttr(default_factory=dict)
    _teams: dict[str, Team] = PrivateAttr(default_factory=dict)
    _users: dict[str, User] = PrivateAttr(default_factory=dict)
    _schedules: dict[str, Schedule] = PrivateAttr(default_factory=dict)
    _policies: dict[str, EscalationPolicy] = PrivateAttr(default_factory=dict)
    _keys: dict[str, tuple[Service, Integration]] = PrivateAttr(default_factory=dict)
    _contact_methods: dict[tuple[str, str], ContactMethod] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._services = _first_by_id(self.services)
        self._heartbeats = _first_by_id(self.heartbeats)
        self._teams = _first_by_id(self.teams)
        self._users = _first_by_id(self.users)
        self._schedules = _first_by_id(self.schedules)
        self._policies = _first_by_id(self.escalation_policies)
        for service in self.services:
            for integration in service.integrations:
                self._keys.setdefault(integration.key, (service, integration))
        for user in self.users:
            for method in user.contact_methods:
                self._contact_methods.setdefault((user.id, method.id), method)

    @staticmethod
    def _get(index: Mapping[str, Any], kind: str, ident: str) -> Any:
        try:
            return index[ident]
        except KeyError:
            raise KeyError(f"unknown {kind} {ident!r}") from None

    def service(self, service_id: str) -> Service:
        """The service with this id."""
        result: Service = self._get(self._services, "service", service_id)
        return result

    def heartbeat(self, heartbeat_id: str) -> Heartbeat:
        """The heartbeat monitor with this id."""
        result: Heartbeat = self._get(self._heartbeats, "heartbeat", heartbeat_id)
        return result

    def team(self, team_id: str) -> Team:
        """The team with this id."""
        result: Team = self._get(self._teams, "team", team_id)
        return result

    def user(self, user_id: str) -> User:
        """The user with this id."""
        result: User = self._get(self._users, "user", user_id)
        return result

    def schedule(self, schedule_id: str) -> Schedule:
        """The schedule with this id."""
        result: Schedule = self._get(self._schedules, "schedule", schedule_id)
        return result

    def policy(self, policy_id: str) -> EscalationPolicy:
        """The escalation policy with this id."""
        result: EscalationPolicy = self._get(self._policies, "escalation policy", policy_id)
        return result

    def contact_method(self, user_id: str, contact_method_id: str) -> ContactMethod:
        """The contact method ``contact_method_id`` of user ``user_id``."""
        try:
            return self._contact_methods[(user_id, contact_method_id)]
        except KeyError:
            raise KeyError(
                f"unknown contact method {contact_method_id!r} of user {user_id!r}"
            ) from None

    def service_for_key(self, routing_key: str) -> tuple[Service, Integration] | None:
        """The service and integration an integration (routing) key belongs to, or None."""
        return self._keys.get(routing_key)

    def upstream(self, service_id: str) -> tuple[str, ...]:
        """Every service ``service_id`` depends on, directly or not, nearest first."""
        seen: dict[str, None] = {}
        queue = list(self.service(service_id).depends_on)
        while queue:
            current = queue.pop(0)
            if current in seen or current == service_id or current not in self._services:
                continue
            seen[current] = None
            queue.extend(self._services[current].depends_on)
        return tuple(seen)
