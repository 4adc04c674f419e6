"""Inhibition rules, as in Alertmanager (pure).

While a firing alert matches all ``source_matchers`` of a rule of its service, alerts of
the same service that match all ``target_matchers`` and have the same value for every
label in ``equal`` (a missing label counts as "") are inhibited. An alert never inhibits
itself. The firing sources of each service are kept by the engine in its ``sources``
table: service -> {alert key: labels}, for open alerts that match some rule's sources.
"""

from __future__ import annotations

from collections.abc import Mapping

from tocsin_common.config.model import InhibitRule

from tocsin_correlation.matchers import matches_all


def is_source(rules: tuple[InhibitRule, ...], labels: Mapping[str, str]) -> bool:
    """Whether an alert with ``labels`` can inhibit others (kept among the sources)."""
    return any(matches_all(rule.source_matchers, labels) for rule in rules)


def inhibitor(
    rules: tuple[InhibitRule, ...],
    target_key: str,
    target: Mapping[str, str],
    sources: Mapping[str, Mapping[str, str]],
) -> str | None:
    """The key of a firing source alert that inhibits the target alert, or None."""
    for rule in rules:
        if not matches_all(rule.target_matchers, target):
            continue
        for key, source in sources.items():
            if key == target_key or not matches_all(rule.source_matchers, source):
                continue
            if all(source.get(name, "") == target.get(name, "") for name in rule.equal):
                return key
    return None
