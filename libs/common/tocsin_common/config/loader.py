"""Load and validate the configuration file, reporting every problem with its line.

Validation runs in two passes. The first is structural: YAML syntax, duplicate keys, and the
pydantic models (types, required and unknown fields, per-object rules). Only when the
structure is sound does the second pass relate objects to each other: unknown and duplicate
ids, duplicate integration keys, dependency cycles, notification rules naming another user's
contact method, overlapping overrides. Each pass reports all of its problems at once, so a
newcomer fixes the file in one go rather than one error per restart.

Pure: nothing here touches the network or any state; :func:`load_config` only reads the file.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .model import TocsinConfig

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "format_path",
    "load_config",
    "parse_config",
    "read_config_file",
]

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file.

    ``path`` is the dotted path to the field (``services[0].integrations[1].key``; empty for
    problems with the file as a whole) and ``line`` the 1-based line, when known.
    """

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ValueError):
    """The configuration file cannot be used; :attr:`issues` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-like scalar rules.

    PyYAML follows YAML 1.1, where ``17:00`` is the integer 1020 (base 60), ``no``/``on``
    are booleans, ``010`` is octal and timestamps become datetimes before validation sees
    them. In this file those are times of day, names and ISO dates that pydantic parses with
    better messages, so only plain decimal numbers and true/false are resolved here.
    """


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag
        not in (
            "tag:yaml.org,2002:bool",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
            "tag:yaml.org,2002:timestamp",
        )
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# No leading "+" on numbers: `address: +15555550100` must stay the string it looks like
# (as a number it would lose the "+" that makes it an E.164 phone number).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^-?(?:0|[1-9][0-9]*)$"), list("-0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:-?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
        r"|-?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-0123456789."),
)


def _key_of(node: Node) -> str | None:
    return node.value if isinstance(node, ScalarNode) else None


def _duplicate_keys(node: Node, path: PathKey) -> Iterator[tuple[PathKey, int, int]]:
    """Yield (path, line, first line) for each key repeated in a mapping.

    PyYAML silently keeps the last of two equal keys; in a config file that hides a mistake.
    Runs on the composed nodes, before merge keys (``<<``) are flattened, because a key
    overriding a merged one is intended.
    """
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = _key_of(key_node)
            if key is None or key == "<<":
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                yield (*path, key), line, seen[key]
            else:
                seen[key] = line
            yield from _duplicate_keys(value_node, (*path, key))
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, index))


def _index_lines(node: Node, path: PathKey, lines: dict[PathKey, int], depth: int = 0) -> None:
    """Record the line of every mapping key and sequence item, by its path in the data."""
    if depth > 100:  # anchors can make a node graph deeper than any sane config
        return
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            key = _key_of(key_node)
            if key is None:
                continue
            # The key's line, not the value's: for a nested block the value starts a line later.
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines, depth + 1)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _index_lines(item, (*path, index), lines, depth + 1)


def _yaml_issue(filename: str, exc: yaml.YAMLError) -> ConfigIssue:
    if isinstance(exc, ComposerError) and "another document" in str(exc.problem):
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        message = "the file holds more than one YAML document ('---'); keep everything in one"
        return ConfigIssue(filename, "", message, line)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = f"invalid YAML: {exc.problem or exc}"
        if exc.context and exc.context_mark is not None:
            message += f" ({exc.context} that started on line {exc.context_mark.line + 1})"
        elif exc.context:
            message += f" ({exc.context})"
        return ConfigIssue(filename, "", message, mark.line + 1 if mark is not None else None)
    return ConfigIssue(filename, "", f"invalid YAML: {exc}", None)


# ---------------------------------------------------------------------------------------------
# Paths, lines and messages
# ---------------------------------------------------------------------------------------------


def format_path(path: Iterable[str | int]) -> str:
    """``("services", 0, "key")`` -> ``services[0].key``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_for(path: PathKey, lines: dict[PathKey, int]) -> int | None:
    # A missing field has no line of its own: point at the nearest enclosing object instead.
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {value!r}".lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return repr(value)


def _model_at(path: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that holds the field at ``path`` (used for "did you mean" hints)."""
    model: Any = TocsinConfig
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            field = next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return None
        model = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    # tuple[X, ...] and X | None both lead to X, the model whose fields we want.
    while True:
        origin = get_origin(annotation)
        if origin is tuple or origin is Union or origin is types.UnionType:
            args = [a for a in get_args(annotation) if a is not type(None) and a is not Ellipsis]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _unknown_field_message(path: Sequence[str | int]) -> str:
    name = str(path[-1])
    message = f"unknown field {name!r}"
    model = _model_at(path[:-1])
    if model is None:
        return message
    known = [f.alias or n for n, f in model.model_fields.items()]
    if f"{name}_env" in known:
        return (
            f"{message}: secrets never go in this file; set {name}_env to the name of "
            "an environment variable that holds it"
        )
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"{message} (did you mean {close[0]!r}?)"
    return f"{message}; allowed here: {', '.join(known)}"


def _pydantic_message(error: Any) -> str:
    kind: str = error["type"]
    loc = tuple(error["loc"])
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error" and loc == ("version",):
        return f"unsupported version {value!r}; this release of Tocsin reads version 1"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return _unknown_field_message(loc)
    if kind == "too_short":
        count = ctx.get("min_length", 1)
        return f"needs at least {count} item{'s' if count != 1 else ''}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of fields, got {_describe(value)}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {_describe(value)}"
    if kind == "string_type":
        return f"expected a string, got {_describe(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_describe(value)}"
    if kind.startswith("datetime") or kind.startswith("date_"):
        return f"expected a date and time such as 2026-12-01T02:00:00Z, got {_describe(value)}"
    # Pydantic's own wording ("Input should be 'a' or 'b'") plus what was actually written.
    message = str(error["msg"])
    message = message[0].lower() + message[1:] if message else message
    return f"{message}, got {_describe(value)}"


# ---------------------------------------------------------------------------------------------
# Cross-reference checks
# ---------------------------------------------------------------------------------------------


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checks:
    """Relations between objects; every problem is appended to :attr:`found`."""

    def __init__(self, config: TocsinConfig, lines: dict[PathKey, int]) -> None:
        self.config = config
        self.lines = lines
        self.found: list[tuple[PathKey, str]] = []

    def add(self, path: PathKey, message: str) -> None:
        self.found.append((path, message))

    def _where(self, path: PathKey) -> str:
        line = _line_for(path, self.lines)
        return format_path(path) + (f", line {line}" if line is not None else "")

    def run(self) -> list[tuple[PathKey, str]]:
        cfg = self.config
        kinds: list[tuple[str, str, Sequence[Any]]] = [
            ("services", "service", cfg.services),
            ("heartbeats", "heartbeat", cfg.heartbeats),
            ("teams", "team", cfg.teams),
            ("users", "user", cfg.users),
            ("schedules", "schedule", cfg.schedules),
            ("escalation_policies", "escalation policy", cfg.escalation_policies),
        ]
        for section, kind, items in kinds:
            self._unique_ids(section, kind, items)
        self._services()
        self._dependency_cycles()
        self._heartbeats()
        self._operations()
        self._teams()
        self._users()
        self._schedules()
        self._policies()
        self._access()
        self._insight()
        return self.found

    def _unique_ids(self, section: str, kind: str, items: Sequence[Any]) -> None:
        first: dict[str, int] = {}
        for index, item in enumerate(items):
            if item.id in first:
                self.add(
                    (section, index, "id"),
                    f"duplicate {kind} id {item.id!r} (first defined at "
                    f"{self._where((section, first[item.id]))})",
                )
            else:
                first[item.id] = index

    def _ref(self, path: PathKey, kind: str, ident: str, known: Iterable[str]) -> bool:
        known = list(known)
        if ident in known:
            return True
        self.add(path, f"unknown {kind} {ident!r}{_hint(ident, known)}")
        return False

    def _services(self) -> None:
        cfg = self.config
        service_ids = [s.id for s in cfg.services]
        policy_ids = [p.id for p in cfg.escalation_policies]
        keys: dict[str, PathKey] = {}
        for i, service in enumerate(cfg.services):
            self._ref(
                ("services", i, "escalation_policy"),
                "escalation policy",
                service.escalation_policy,
                policy_ids,
            )
            for j, integration in enumerate(service.integrations):
                path: PathKey = ("services", i, "integrations", j, "key")
                if integration.key in keys:
                    self.add(
                        path,
                        f"integration key {integration.key!r} is already used by "
                        f"{self._where(keys[integration.key][:-1])}; every key routes to "
                        "exactly one service",
                    )
                else:
                    keys[integration.key] = path
            seen: set[str] = set()
            for j, dep in enumerate(service.depends_on):
                dep_path: PathKey = ("services", i, "depends_on", j)
                if dep == service.id:
                    self.add(dep_path, f"service {service.id!r} cannot depend on itself")
                elif dep in seen:
                    self.add(dep_path, f"{dep!r} is listed more than once")
                else:
                    self._ref(dep_path, "service", dep, service_ids)
                seen.add(dep)

    def _dependency_cycles(self) -> None:
        services = self.config.services
        index = {s.id: i for i, s in reversed(list(enumerate(services)))}
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        stack: list[str] = []
        reported: set[frozenset[tuple[str, str]]] = set()

        def visit(sid: str) -> None:
            state[sid] = 1
            stack.append(sid)
            service = services[index[sid]]
            for j, dep in enumerate(service.depends_on):
                if dep == sid or dep not in index:
                    continue  # reported by _services
                if state.get(dep) == 1:
                    cycle = [*stack[stack.index(dep) :], dep]
                    edges = frozenset(itertools.pairwise(cycle))
                    if edges not in reported:
                        reported.add(edges)
                        self.add(
                            ("services", index[sid], "depends_on", j),
                            "dependency cycle: " + " -> ".join(cycle),
                        )
                elif dep not in state:
                    visit(dep)
            stack.pop()
            state[sid] = 2

        for service in services:
            if service.id not in state:
                visit(service.id)

    def _heartbeats(self) -> None:
        service_ids = [s.id for s in self.config.services]
        for i, heartbeat in enumerate(self.config.heartbeats):
            self._ref(("heartbeats", i, "service"), "service", heartbeat.service, service_ids)

    def _operations(self) -> None:
        # change_control, automation and status_page (their models: change_control.py,
        # automation.py, status_page.py).
        cfg = self.config
        service_ids = [s.id for s in cfg.services]
        sections: list[tuple[PathKey, str, Sequence[Any]]] = [
            (("change_control", "gates"), "deploy gate", cfg.change_control.gates),
            (("automation", "rules"), "automation rule", cfg.automation.rules),
            (("status_page", "components"), "component", cfg.status_page.components),
        ]
        for section, kind, items in sections:
            first: dict[str, int] = {}
            for index, item in enumerate(items):
                if item.id in first:
                    self.add(
                        (*section, index, "id"),
                        f"duplicate {kind} id {item.id!r} (first defined at "
                        f"{self._where((*section, first[item.id]))})",
                    )
                first.setdefault(item.id, index)
        for i, gate in enumerate(cfg.change_control.gates):
            for j, service in enumerate(gate.services):
                self._ref(
                    ("change_control", "gates", i, "services", j), "service", service, service_ids
                )
            names: set[str] = set()
            for j, window in enumerate(gate.freeze_windows):
                if window.name in names:
                    self.add(
                        ("change_control", "gates", i, "freeze_windows", j, "name"),
                        f"freeze window {window.name!r} is listed more than once in this gate",
                    )
                names.add(window.name)
        for i, component in enumerate(cfg.status_page.components):
            for j, service in enumerate(component.services):
                self._ref(
                    ("status_page", "components", i, "services", j), "service", service, service_ids
                )
        priority_ids = list(dict.fromkeys(p.id for p in cfg.insight.priorities))
        for i, rule in enumerate(cfg.automation.rules):
            action = rule.action
            if (
                action.type == "incident"
                and action.priority is not None
                and priority_ids
                and action.priority not in priority_ids
            ):
                self.add(
                    ("automation", "rules", i, "action", "priority"),
                    f"rule {rule.id!r} sets priority {action.priority!r}, which is not one of "
                    f"insight.priorities ({', '.join(priority_ids)})",
                )
            if (
                action.type == "http"
                and action.signed
                and not cfg.notification.webhook.signing_secret_env
            ):
                self.add(
                    ("automation", "rules", i, "action", "signed"),
                    f"rule {rule.id!r} would send its request unsigned: "
                    "notification.webhook.signing_secret_env is empty; name the variable "
                    "holding the signing secret there, or set `signed: false` on this action",
                )

    def _teams(self) -> None:
        user_ids = [u.id for u in self.config.users]
        for i, team in enumerate(self.config.teams):
            for part in ("members", "managers", "viewers"):
                seen: set[str] = set()
                for j, member in enumerate(getattr(team, part)):
                    path: PathKey = ("teams", i, part, j)
                    if member in seen:
                        self.add(path, f"{member!r} is listed more than once")
                    else:
                        self._ref(path, "user", member, user_ids)
                    seen.add(member)

    def _access(self) -> None:
        cfg = self.config
        user_ids = [u.id for u in cfg.users]
        team_ids = [t.id for t in cfg.teams]
        for i, admin in enumerate(cfg.access.admins):
            self._ref(("access", "admins", i), "user", admin, user_ids)
        first: dict[str, int] = {}
        for i, account in enumerate(cfg.access.service_accounts):
            if account.id in first:
                self.add(
                    ("access", "service_accounts", i, "id"),
                    f"duplicate service account id {account.id!r}",
                )
            first.setdefault(account.id, i)
            if account.id in user_ids:
                self.add(
                    ("access", "service_accounts", i, "id"),
                    f"{account.id!r} is also a user id; a principal's id names one of them",
                )
            for j, grant in enumerate(account.roles):
                self._ref(
                    ("access", "service_accounts", i, "roles", j, "team"),
                    "team",
                    grant.team,
                    team_ids,
                )
        if cfg.access.oidc is not None:
            for i, group_role in enumerate(cfg.access.oidc.group_roles):
                self._ref(
                    ("access", "oidc", "group_roles", i, "team"),
                    "team",
                    group_role.team,
                    team_ids,
                )
        for i, service in enumerate(cfg.services):
            if service.team is not None:
                self._ref(("services", i, "team"), "team", service.team, team_ids)
        for i, schedule in enumerate(cfg.schedules):
            if schedule.team is not None:
                self._ref(("schedules", i, "team"), "team", schedule.team, team_ids)

    def _users(self) -> None:
        for i, user in enumerate(self.config.users):
            methods: dict[str, int] = {}
            for j, method in enumerate(user.contact_methods):
                if method.id in methods:
                    self.add(
                        ("users", i, "contact_methods", j, "id"),
                        f"duplicate contact method id {method.id!r} (first defined at "
                        f"{self._where(('users', i, 'contact_methods', methods[method.id]))})",
                    )
                else:
                    methods[method.id] = j
                if (
                    method.type == "webhook"
                    and not method.unsigned
                    and not self.config.notification.webhook.signing_secret_env
                ):
                    self.add(
                        ("users", i, "contact_methods", j, "unsigned"),
                        f"webhook contact method {method.id!r} would be sent unsigned: "
                        "notification.webhook.signing_secret_env is empty; name the variable "
                        "holding the signing secret there, or set `unsigned: true` on this "
                        "contact method to send its pages without a signature",
                    )
            for urgency in ("high", "low"):
                rules = getattr(user.notification_rules, urgency)
                for j, rule in enumerate(rules):
                    if rule.contact_method not in methods:
                        has = ", ".join(methods) or "none"
                        self.add(
                            ("users", i, "notification_rules", urgency, j, "contact_method"),
                            f"unknown contact method {rule.contact_method!r} for user "
                            f"{user.id!r}{_hint(rule.contact_method, methods)} "
                            f"(the user's contact methods: {has})",
                        )

    def _schedules(self) -> None:
        user_ids = [u.id for u in self.config.users]
        for i, schedule in enumerate(self.config.schedules):
            for j, layer in enumerate(schedule.layers):
                for k, user in enumerate(layer.users):
                    self._ref(("schedules", i, "layers", j, "users", k), "user", user, user_ids)
            by_user: dict[str, list[tuple[datetime, datetime, int]]] = {}
            for j, override in enumerate(schedule.overrides):
                self._ref(("schedules", i, "overrides", j, "user"), "user", override.user, user_ids)
                by_user.setdefault(override.user, []).append((override.start, override.end, j))
            for user, spans in by_user.items():
                # Sweep in start order, remembering the override that reaches furthest: one
                # long override can overlap several later ones that do not overlap each other.
                spans.sort(key=lambda span: (span[0], span[2]))
                reach: tuple[datetime, int] | None = None
                for start, end, j in spans:
                    if reach is not None and start < reach[0]:  # half-open: back to back is fine
                        first, second = min(j, reach[1]), max(j, reach[1])
                        self.add(
                            ("schedules", i, "overrides", second),
                            f"override for {user!r} overlaps "
                            f"{self._where(('schedules', i, 'overrides', first))}",
                        )
                    if reach is None or end > reach[0]:
                        reach = (end, j)

    def _policies(self) -> None:
        cfg = self.config
        known = {
            "user": [u.id for u in cfg.users],
            "schedule": [s.id for s in cfg.schedules],
            "team": [t.id for t in cfg.teams],
        }
        for i, policy in enumerate(cfg.escalation_policies):
            for j, level in enumerate(policy.levels):
                for k, target in enumerate(level.targets):
                    self._ref(
                        ("escalation_policies", i, "levels", j, "targets", k, "id"),
                        target.type,
                        target.id,
                        known[target.type],
                    )

    def _insight(self) -> None:
        cfg = self.config
        insight = cfg.insight
        team_ids = [t.id for t in cfg.teams]
        service_ids = [s.id for s in cfg.services]
        calendar_ids = [c.id for c in insight.calendars]
        self._unique_ids_at(("insight", "calendars"), "calendar", insight.calendars)
        calendar_of_team: dict[str, str] = {}
        for i, calendar in enumerate(insight.calendars):
            for j, team in enumerate(calendar.teams):
                path: PathKey = ("insight", "calendars", i, "teams", j)
                if not self._ref(path, "team", team, team_ids):
                    continue
                if team in calendar_of_team:
                    self.add(
                        path,
                        f"team {team!r} already has calendar {calendar_of_team[team]!r}; "
                        "a team works on one calendar",
                    )
                else:
                    calendar_of_team[team] = calendar.id
            seen_days: set[object] = set()
            for j, day in enumerate(calendar.holidays):
                if day in seen_days:
                    self.add(
                        ("insight", "calendars", i, "holidays", j),
                        f"{day.isoformat()} is listed more than once",
                    )
                seen_days.add(day)
        if insight.default_calendar is not None:
            self._ref(
                ("insight", "default_calendar"), "calendar", insight.default_calendar, calendar_ids
            )
        priority_ids = [p.id for p in insight.priorities]
        for i, rule in enumerate(insight.priorities):
            for j, service in enumerate(rule.services):
                self._ref(
                    ("insight", "priorities", i, "services", j), "service", service, service_ids
                )
        policy_of: dict[str, int] = {}
        for i, policy in enumerate(insight.sla_policies):
            path = ("insight", "sla_policies", i, "priority")
            if self._ref(path, "priority", policy.priority, priority_ids):
                if policy.priority in policy_of:
                    self.add(
                        path,
                        f"priority {policy.priority!r} already has an SLA policy (at "
                        f"{self._where(('insight', 'sla_policies', policy_of[policy.priority]))})",
                    )
                else:
                    policy_of[policy.priority] = i
            cal_path: PathKey = ("insight", "sla_policies", i, "calendar")
            if policy.calendar == "business":
                if insight.default_calendar is None:
                    owners = sorted({s.team or "" for s in cfg.services} - set(calendar_of_team))
                    if owners:
                        who = ", ".join(repr(o) if o else "services without a team" for o in owners)
                        self.add(
                            cal_path,
                            f"'business' needs a calendar for every team that owns a service, "
                            f"and {who} have none; list them in a calendar's teams or set "
                            "insight.default_calendar",
                        )
            elif policy.calendar != "24x7":
                self._ref(cal_path, "calendar", policy.calendar, calendar_ids)
        slo_of: dict[str, int] = {}
        for i, slo in enumerate(insight.slos):
            path = ("insight", "slos", i, "service")
            if self._ref(path, "service", slo.service, service_ids):
                if slo.service in slo_of:
                    self.add(
                        path,
                        f"service {slo.service!r} already has an SLO (at "
                        f"{self._where(('insight', 'slos', slo_of[slo.service]))})",
                    )
                else:
                    slo_of[slo.service] = i

    def _unique_ids_at(self, section: PathKey, kind: str, items: Sequence[Any]) -> None:
        first: dict[str, int] = {}
        for index, item in enumerate(items):
            if item.id in first:
                self.add(
                    (*section, index, "id"),
                    f"duplicate {kind} id {item.id!r} (first defined at "
                    f"{self._where((*section, first[item.id]))})",
                )
            else:
                first[item.id] = index


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def _sorted(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    # Read like a compiler's output: in file order, unknown lines last (sort is stable).
    return sorted(issues, key=lambda issue: issue.line if issue.line is not None else 1 << 30)


def parse_config(text: str | bytes, filename: str = "<string>") -> TocsinConfig:
    """Validate configuration ``text`` (the content of ``filename``, used in messages).

    Raises :class:`ConfigError` listing every problem found.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                [ConfigIssue(filename, "", f"not UTF-8 text (byte {exc.start}): {exc.reason}")]
            ) from None

    try:
        # The reader checks the characters as it is made: a control character is refused here.
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(filename, exc)]) from None
    try:
        node = loader.get_single_node()
        duplicates = list(_duplicate_keys(node, ())) if node is not None else []
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(filename, exc)]) from None
    finally:
        loader.dispose()

    if node is None:
        raise ConfigError(
            [ConfigIssue(filename, "", "the file is empty; it needs at least 'version: 1'")]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigIssue(
                    filename,
                    "",
                    "the top level must be a mapping (version, services, users, ...), "
                    f"got {_describe(data)}",
                    node.start_mark.line + 1,
                )
            ]
        )

    lines: dict[PathKey, int] = {(): node.start_mark.line + 1}
    _index_lines(node, (), lines)

    issues = [
        ConfigIssue(
            filename, format_path(path), f"duplicate key (first given on line {first})", line
        )
        for path, line, first in duplicates
    ]
    try:
        config = TocsinConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            issues.append(
                ConfigIssue(
                    filename, format_path(loc), _pydantic_message(error), _line_for(loc, lines)
                )
            )
        raise ConfigError(_sorted(issues)) from None
    if issues:
        raise ConfigError(_sorted(issues))

    found = _Checks(config, lines).run()
    if found:
        raise ConfigError(
            _sorted(
                [
                    ConfigIssue(filename, format_path(path), message, _line_for(path, lines))
                    for path, message in found
                ]
            )
        )
    return config


def read_config_file(path: str | os.PathLike[str]) -> bytes:
    """The raw content of the configuration file; :class:`ConfigError` if it cannot be read."""
    filename = os.fspath(path)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(filename, "", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue(filename, "", "is a directory, not a file")]) from None
    except OSError as exc:
        message = f"cannot read: {exc.strerror or exc}"
        raise ConfigError([ConfigIssue(filename, "", message)]) from None


def load_config(path: str | os.PathLike[str]) -> TocsinConfig:
    """Read and validate the configuration file at ``path``.

    Raises :class:`ConfigError` (a ``ValueError``) listing every problem found, each naming
    the file as given, the line when known, the path to the field and what is wrong.
    """
    return parse_config(read_config_file(path), os.fspath(path))
