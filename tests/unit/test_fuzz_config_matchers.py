"""Property tests of the other parsers people feed: the config loader and silence matchers.
Whatever the input, the answer is a parsed object or the parser's own error naming the
problem — never another exception, never a hang (RE2: linear time)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tocsin_common.config import parse_config
from tocsin_common.config.loader import ConfigError
from tocsin_correlation.matchers import MatcherError, parse_matcher, parse_matchers

FUZZ_SCALE = int(os.environ.get("TOCSIN_FUZZ_SCALE", "1"))

NAMES = st.text("abcdefghijklmnopqrstuvwxyz_:0123456789", min_size=0, max_size=12)
OPS = st.sampled_from(["=", "!=", "=~", "!~", "==", "~", ""])
VALUES = st.text(min_size=0, max_size=40)


@st.composite
def matcher_texts(draw: st.DrawFn) -> str:
    name, op, value = draw(NAMES), draw(OPS), draw(VALUES)
    quote = draw(st.sampled_from(['"', "", "'"]))
    return f"{name}{op}{quote}{value}{quote}"


@settings(max_examples=400 * FUZZ_SCALE, deadline=None)
@given(st.one_of(matcher_texts(), st.text(max_size=80)))
@example(':=""')
def test_a_matcher_parses_or_is_refused_by_name(text: str) -> None:
    try:
        matcher = parse_matcher(text)
    except MatcherError as e:
        assert str(e)
    else:
        assert matcher.name and matcher.op in ("=", "!=", "=~", "!~")
        matcher.matches({matcher.name: "x" * 1000})  # never a hang: RE2 is linear


@settings(max_examples=300 * FUZZ_SCALE, deadline=None)
@given(st.lists(matcher_texts(), max_size=5).map(lambda ms: "{" + ", ".join(ms) + "}"))
def test_a_matcher_set_parses_or_is_refused(text: str) -> None:
    try:
        parse_matchers(text)
    except MatcherError as e:
        assert str(e)


YAML_ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=20),
    st.floats(allow_nan=True, allow_infinity=True),
)
YAML_VALUES = st.recursive(
    YAML_ATOMS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "version",
                    "services",
                    "teams",
                    "users",
                    "id",
                    "name",
                    "team",
                    "members",
                    "escalation_policy",
                    "levels",
                    "access",
                    "admins",
                    "limits",
                    "notification",
                    "schedules",
                    "layers",
                    "grouping",
                    "mode",
                    "key",
                    "integrations",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)


@settings(
    max_examples=300 * FUZZ_SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.one_of(YAML_VALUES.map(repr), st.text(max_size=200), st.binary(max_size=200)))
@example("\x1f")  # a control character: the YAML reader refused it before the loader asked
@example(b"\xff")
def test_any_config_text_loads_or_is_refused_with_config_errors(text: str | bytes) -> None:
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as e:
        assert "fuzz.yaml" in str(e)
