"""Bounded matchers and caps on user-supplied collections (SPEC §10): RE2 matcher regexes in
linear time, the `limits:` config section, and the pure checks of tocsin_common.limits that
SilenceService, Snooze and AddNote call — as tables."""

from __future__ import annotations

import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest
from tocsin.v1 import silence_service_pb2 as spb
from tocsin_common.config import ConfigError, Limits, Matcher, parse_config
from tocsin_common.config.model import compile_matcher_regex
from tocsin_common.limits import (
    active_silences_problem,
    note_problem,
    purgeable_silences,
    silence_problems,
    snooze_problem,
    too_long,
    too_many,
)
from tocsin_correlation.matchers import MatcherError, parse_matcher
from tocsin_correlation.silences import Silence, count_active, matchers_from_proto

LIMITS = Limits()
NOW = 1_800_000_000.0

# --- RE2: linear time, anchored, refusals named ------------------------------------------------

# Catastrophic backtracking under Python's re: (a|a)*b against 24 a's takes ~1 s there and
# doubles with every character, so 10,000 would never finish. Through the matcher code they
# must take well under a second.
REDOS = [
    ("summary", "(a|a)*b", "a" * 10_000),
    ("summary", "(a+)+$", "a" * 10_000 + "b"),
    ("summary", "(a|aa)+$", "a" * 10_000 + "!"),
    ("summary", "(.*a){12}", "a" * 10_000 + "b"),
]


@pytest.mark.parametrize(("label", "pattern", "text"), REDOS)
def test_a_redos_pattern_is_matched_in_linear_time(label: str, pattern: str, text: str) -> None:
    matcher = parse_matcher(f'{label}=~"{pattern}"')
    started = time.perf_counter()
    found = matcher.matches({label: text})
    elapsed = time.perf_counter() - started
    assert found is False
    assert elapsed < 0.5, f"{pattern} took {elapsed:.3f}s on {len(text):,} characters"


@pytest.mark.parametrize(
    ("matcher", "value", "expected"),
    [
        ('summary=~"(a|a)*b"', "aaab", True),
        ('summary=~"(a|a)*b"', "aaabx", False),  # anchored at the end
        ('summary=~"(a|a)*b"', "xaaab", False),  # anchored at the start
        ('severity=~"warning|info"', "info", True),
        ('severity=~"warning|info"', "infos", False),  # the alternation is grouped
        ('summary=~"a.b"', "a\nb", True),  # `.` matches a newline
        ('summary!~"disk.*"', "disk full", False),
        ('summary!~"disk.*"', "cpu", True),
        ('missing=~""', "", True),  # an absent label matches as ""
        ('host=~"(?P<n>web)-[0-9]+"', "web-12", True),  # named groups are fine
    ],
)
def test_re2_matcher_semantics(matcher: str, value: str, expected: bool) -> None:
    name = matcher.split("=")[0].split("!")[0]
    labels = {name: value} if name != "missing" else {}
    assert parse_matcher(matcher).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (r'summary=~"(a+)\1"', "invalid escape sequence"),  # backreference
        ('summary=~"(?=a)a"', "invalid perl operator"),  # lookahead
        ('summary=~"(?<!a)b"', "invalid"),  # lookbehind
        ('summary=~"a{1001}"', "invalid repetition size"),
        ('summary=~"("', "missing"),
    ],
)
def test_patterns_re2_refuses_are_errors_naming_the_matcher(text: str, reason: str) -> None:
    with pytest.raises(MatcherError) as error:
        parse_matcher(text)
    message = str(error.value)
    assert repr(text) in message and "invalid regular expression" in message
    assert reason in message and "RE2" in message


def test_inhibit_rules_in_the_file_use_re2_too() -> None:
    config = textwrap.dedent(
        """\
        version: 1
        services:
          - id: api
            name: API
            escalation_policy: pol
            inhibit_rules:
              - source_matchers: ['alertname="NodeDown"']
                target_matchers: ['summary=~"(x)\\\\1"']
        escalation_policies:
          - id: pol
            name: Pol
            levels: [{delay: 5m, targets: [{type: user, id: u}]}]
        users: [{id: u, name: U}]
        """
    )
    with pytest.raises(ConfigError, match=r"target_matchers.*invalid regular expression.*RE2"):
        parse_config(config, "tocsin.yaml")


def test_a_value_over_the_cap_is_refused_before_its_regex_is_compiled() -> None:
    # Compiled regexes are cached, so an oversized client value must not reach the compiler:
    # this one would not compile, yet the length is what is reported.
    text = 'summary=~"' + "(" * 1001 + '"'
    with pytest.raises(MatcherError, match=r"value of 1,001 characters is over the limit"):
        parse_matcher(text, max_value_chars=1000)
    with pytest.raises(MatcherError, match="invalid regular expression"):
        parse_matcher(text)
    assert parse_matcher('a="' + "v" * 1000 + '"', max_value_chars=1000).value == "v" * 1000


def test_errors_do_not_echo_a_whole_oversized_matcher() -> None:
    with pytest.raises(MatcherError) as error:
        parse_matcher("summary=~" + "(" * 1_000_000)
    message = str(error.value)
    assert len(message) < 1000 and "characters]" in message


def test_regexes_are_compiled_once() -> None:
    assert compile_matcher_regex("web-.*") is compile_matcher_regex("web-.*")


def test_the_matcher_text_parser_is_linear_over_long_whitespace() -> None:
    # The parser's own regex used to end in a lazy `.*?` then `\s*$`: 0.93 s on 20,000
    # spaces, quadratic, so a 4 MB SilenceService request would block for hours.
    text = 'a="x' + " " * 200_000 + 'x"'
    started = time.perf_counter()
    matcher = parse_matcher(text)
    assert time.perf_counter() - started < 0.5
    assert len(matcher.value) == 200_002


@pytest.mark.parametrize(
    ("text", "value"),
    [(' a = "x" ', "x"), ("a=  foo  ", "foo"), ('a=" padded "', " padded "), ("a=", "")],
)
def test_the_matcher_value_is_stripped_outside_quotes(text: str, value: str) -> None:
    assert parse_matcher(text) == Matcher(name="a", op="=", value=value)


# --- the limits: section -----------------------------------------------------------------------

BASE = "version: 1\n"


def test_limits_default_when_the_section_is_absent() -> None:
    limits = parse_config(BASE, "tocsin.yaml").limits
    assert limits == Limits()
    assert limits.silence_max_matchers == 32
    assert limits.silence_comment_max_chars == 1000
    assert limits.active_silences_per_service == 1000
    assert limits.silence_retention == timedelta(days=5)
    assert limits.snooze_max == timedelta(days=7)
    assert limits.note_max_chars == 10_000


def test_limits_are_read_from_the_file() -> None:
    text = BASE + "limits: {snooze_max: 1d, silence_retention: 0s, note_max_chars: 500}\n"
    limits = parse_config(text, "tocsin.yaml").limits
    assert limits.snooze_max == timedelta(days=1)
    assert limits.silence_retention == timedelta(0)
    assert limits.note_max_chars == 500


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("silence_max_matchers: 0", "silence_max_matchers"),
        ("snooze_max: 0s", "snooze_max"),
        ("note_max_chars: -1", "note_max_chars"),
        ("silence_retention: soon", "silence_retention"),
        ("max_silences: 3", "max_silences"),  # misspelt: unknown fields are errors
    ],
)
def test_bad_limits_are_refused_naming_the_field(body: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"limits\.{field}"):
        parse_config(BASE + f"limits: {{{body}}}\n", "tocsin.yaml")


# --- the checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cap", "expected"),
    [
        ("", 0, None),
        ("abc", 3, None),
        ("abcd", 3, "f: 4 characters, over the limit of 3 (limits.s)"),
        ("x" * 1500, 1000, "f: 1,500 characters, over the limit of 1,000 (limits.s)"),
    ],
)
def test_too_long(value: str, cap: int, expected: str | None) -> None:
    assert too_long("f", value, cap, "s") == expected


@pytest.mark.parametrize(
    ("count", "cap", "expected"),
    [(0, 0, None), (32, 32, None), (33, 32, "f: 33 items, over the limit of 32 (limits.s)")],
)
def test_too_many(count: int, cap: int, expected: str | None) -> None:
    assert too_many("f", count, cap, "s") == expected


def _matchers(n: int, name: str = "a", value: str = "x") -> tuple[Matcher, ...]:
    return tuple(Matcher(name=name, op="=", value=value) for _ in range(n))


@pytest.mark.parametrize(
    ("matchers", "fields", "expected"),
    [
        (_matchers(32), {}, []),
        (_matchers(33), {}, ["matchers: 33 items, over the limit of 32"]),
        (_matchers(1, name="n" * 128), {}, []),
        (_matchers(1, name="n" * 129), {}, ["matchers[0].name: 129 characters"]),
        (_matchers(1, value="v" * 1000), {}, []),
        (_matchers(1, value="v" * 1001), {}, ["matchers[0].value: 1,001 characters"]),
        ((), {"comment": "c" * 1000}, []),
        ((), {"comment": "c" * 1001}, ["comment: 1,001 characters, over the limit of 1,000"]),
        ((), {"silence_id": "i" * 129}, ["silence_id: 129 characters"]),
        ((), {"created_by": "b" * 129}, ["created_by: 129 characters"]),
        (
            _matchers(2, value="v" * 1001),
            {"comment": "c" * 1001},
            ["comment: ", "matchers[0].value", "matchers[1].value"],
        ),
    ],
)
def test_silence_problems(
    matchers: tuple[Matcher, ...], fields: dict[str, str], expected: list[str]
) -> None:
    problems = silence_problems(LIMITS, matchers, comment=fields.pop("comment", ""), **fields)
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start)
        assert "(limits." in problem


@pytest.mark.parametrize(
    ("service_id", "active", "expected"),
    [
        ("api", 0, None),
        ("api", 999, None),
        ("api", 1000, "service_id: 1,000 silences of service 'api' are active, the limit is"),
        ("", 1000, "service_id: 1,000 silences of every service (no service_id) are active"),
        ("", 5000, "service_id: 5,000 silences"),
    ],
)
def test_active_silences_problem(service_id: str, active: int, expected: str | None) -> None:
    problem = active_silences_problem(LIMITS, service_id, active)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(expected)
        assert "limits.active_silences_per_service" in problem


DAY = 86_400.0


@pytest.mark.parametrize(
    ("retention", "ends", "expected"),
    [
        ("5d", {"live": NOW + 60, "recent": NOW - 4 * DAY, "old": NOW - 6 * DAY}, ["old"]),
        ("5d", {"edge": NOW - 5 * DAY, "inside": NOW - 5 * DAY + 1}, ["edge"]),
        ("0s", {"ended": NOW - 1, "now": NOW, "live": NOW + 1}, ["ended", "now"]),
        ("5d", {}, []),
    ],
)
def test_purgeable_silences(retention: str, ends: dict[str, float], expected: list[str]) -> None:
    limits = Limits.model_validate({"silence_retention": retention})
    assert purgeable_silences(limits, ends.items(), NOW) == expected


AT = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ahead", "refused"),
    [
        (timedelta(minutes=5), False),
        (timedelta(days=7), False),
        (timedelta(days=7, seconds=1), True),
        (timedelta(days=365), True),
    ],
)
def test_snooze_problem(ahead: timedelta, refused: bool) -> None:
    problem = snooze_problem(LIMITS, AT + ahead, AT)
    if not refused:
        assert problem is None
    else:
        assert problem is not None
        assert problem.startswith("until: ") and "more than 1w ahead (limits.snooze_max)" in problem


@pytest.mark.parametrize(
    ("length", "refused"), [(1, False), (10_000, False), (10_001, True), (1_000_000, True)]
)
def test_note_problem(length: int, refused: bool) -> None:
    problem = note_problem(LIMITS, "n" * length)
    assert (problem is not None) is refused
    if problem:
        assert problem.startswith("text: ") and "(limits.note_max_chars)" in problem


# --- correlation: counting before parsing, active silences per bucket --------------------------


def test_too_many_matchers_are_refused_before_any_is_parsed() -> None:
    # 33 matchers in one text, the last an invalid regex: the count is reported, not the
    # regex, so nothing was parsed (or compiled) first.
    text = "{" + ", ".join(['a="x"'] * 32 + ['b=~"("']) + "}"
    with pytest.raises(MatcherError, match=r"^matchers: 33 items.*silence_max_matchers"):
        matchers_from_proto([spb.Matcher(name=text)], LIMITS)
    # Text and explicit matchers count together.
    mixed = [spb.Matcher(name="{" + ", ".join(['a="x"'] * 31) + "}")] + [
        spb.Matcher(name="b", op=spb.Matcher.OP_EQUAL, value="y")
    ] * 2
    with pytest.raises(MatcherError, match=r"matchers: 33 items"):
        matchers_from_proto(mixed, LIMITS)
    assert len(matchers_from_proto(mixed[:2], LIMITS)) == 32
    assert len(matchers_from_proto(mixed)) == 33  # stored silences are read without a cap
    long_value = [spb.Matcher(name="a", op=spb.Matcher.OP_REGEX, value="v" * 1001)]
    with pytest.raises(MatcherError, match=r"matchers\[0\]: .*matcher_value_max_chars"):
        matchers_from_proto(long_value, LIMITS)


def _silence(silence_id: str, service_id: str, ends_at: float) -> Silence:
    return Silence(silence_id, service_id, _matchers(1), NOW - 10, ends_at)


def test_count_active_counts_the_silences_of_one_bucket_still_to_end() -> None:
    silences = [
        _silence("a1", "api", NOW + 60),
        _silence("a2", "api", NOW + 60),
        _silence("a-old", "api", NOW - 1),  # expired
        _silence("d1", "db", NOW + 60),
        _silence("e1", "", NOW + 60),
    ]
    assert count_active(silences, "api", NOW) == 2
    assert count_active(silences, "api", NOW, excluding="a1") == 1  # being replaced
    assert count_active(silences, "db", NOW) == 1
    assert count_active(silences, "", NOW) == 1  # service-less silences: a bucket of their own
    assert count_active(silences, "web", NOW) == 0
