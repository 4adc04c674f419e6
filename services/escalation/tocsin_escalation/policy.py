"""Escalation plans: which pages a level of a policy sends (pure).

A page is one (user, notification rule) pair; its idempotency key names the incident,
level, loop, user and rule, so a replay of the same decision never pages twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tocsin_common.config import TocsinConfig

from tocsin_escalation.oncall import resolve_targets


@dataclass(frozen=True)
class PlannedPage:
    user_id: str
    contact_method_id: str
    rule_index: int
    delay: timedelta
    level: int  # 1-based
    loop: int

    def idempotency_key(self, incident_id: str) -> str:
        return f"{incident_id}:{self.level}:{self.loop}:{self.user_id}:{self.rule_index}"


def plan_level(
    config: TocsinConfig, policy_id: str, level: int, loop: int, urgency: str, at: datetime
) -> list[PlannedPage]:
    """The pages level `level` (1-based) of the policy sends at `at`, by each user's rules."""
    policy = config.policy(policy_id)
    step = policy.levels[level - 1]
    users = resolve_targets(config, [(t.type, t.id) for t in step.targets], at)
    return plan_users(config, users, level, loop, urgency)


def plan_users(
    config: TocsinConfig, users: list[str], level: int, loop: int, urgency: str
) -> list[PlannedPage]:
    """The pages each user's notification rules for `urgency` ask for."""
    pages: list[PlannedPage] = []
    for user_id in users:
        rules = config.user(user_id).notification_rules.for_urgency(urgency)  # type: ignore[arg-type]
        for index, rule in enumerate(rules):
            pages.append(PlannedPage(user_id, rule.contact_method, index, rule.delay, level, loop))
    return pages
