"""The Kafka topics of Tocsin: the one place their names, partitions and keys are defined.

Each topic carries one protobuf message type (protos/tocsin/v1). The key decides which
partition, and so which worker, owns the state a message touches: that is how every
service scales out by partitions while keeping one writer per incident.

The pipeline's topics have as many partitions as the process setting
TOCSIN_KAFKA_PARTITIONS says (default DEFAULT_PARTITIONS): at most that many workers of a
service share the load. Dead letters and the audit log keep a small fixed count. The count
is used when a topic is created; a running cluster keeps what it has (docs/deployment.md,
Partitions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Sized for growth: 48 workers of a service at most, and enough partitions that keys
# (service ids, user ids, incident ids) spread evenly. Every partition costs the broker
# and each consumer a little (fetch sessions, faust changelogs), see docs/deployment.md.
DEFAULT_PARTITIONS = 48
MAX_PARTITIONS = 1000


@dataclass(frozen=True)
class Topic:
    name: str
    # None: the pipeline's setting (TOCSIN_KAFKA_PARTITIONS); a number: always that many.
    partitions: int | None
    key: str  # what the message key is, in words (documentation and checks)
    message: str  # the protobuf message type of the value
    compacted: bool = False
    retention_ms: int = 7 * 24 * 3600 * 1000

    def partition_count(self, configured: int) -> int:
        """How many partitions the topic is created with when the setting is
        ``configured``."""
        return self.partitions if self.partitions is not None else configured


# alert-ingest consumes this one from tools that emit to Kafka directly; the
# `tocsin-format` header says which wire format the value is in.
ALERTS_RAW = Topic(
    "alerts.raw", None, "routing key (any is accepted)", "bytes of a supported format"
)
# Keyed by service so one correlation worker owns a service's dedup and grouping state.
ALERTS_NORMALIZED = Topic("alerts.normalized", None, "service id", "tocsin.v1.Alert")
ALERTS_DEADLETTER = Topic(
    "alerts.deadletter",
    3,
    "original key",
    "tocsin.v1.DeadLetter",
    retention_ms=30 * 24 * 3600 * 1000,
)
CHANGES = Topic("changes", None, "service id", "tocsin.v1.ChangeEvent")
# Same key and partition count as alerts.normalized: commands apply in order with alerts
# (CO_PARTITIONED).
INCIDENTS_COMMANDS = Topic("incidents.commands", None, "service id", "tocsin.v1.IncidentCommand")
INCIDENTS_EVENTS = Topic("incidents.events", None, "incident id", "tocsin.v1.IncidentEvent")
# Timeline entries that change no incident state, from the services that decide them
# (escalation's levels reached): written to the timeline by their producer itself, not
# looped through correlation; kept here for insight and replays. Pages' outcomes are on
# notifications.status. Same key as incidents.events.
INCIDENTS_TIMELINE = Topic("incidents.timeline", None, "incident id", "tocsin.v1.IncidentEvent")
# Keyed by user so one notification worker sees all of a person's pages (bundling, limits).
INCIDENTS_DEADLETTER = Topic(
    "incidents.deadletter",
    3,
    "original key",
    "tocsin.v1.DeadLetter",
    retention_ms=30 * 24 * 3600 * 1000,
)
NOTIFICATIONS_REQUESTS = Topic(
    "notifications.requests", None, "user id", "tocsin.v1.NotificationRequest"
)
NOTIFICATIONS_STATUS = Topic(
    "notifications.status", None, "incident id", "tocsin.v1.NotificationStatus"
)
NOTIFICATIONS_DEADLETTER = Topic(
    "notifications.deadletter",
    3,
    "user id",
    "tocsin.v1.DeadLetter",
    retention_ms=30 * 24 * 3600 * 1000,
)

# Every allowed or denied mutation, from every service; keyed by actor. Kept a year.
AUDIT = Topic(
    "audit",
    3,
    "actor (principal id)",
    "tocsin.v1.AuditRecord",
    retention_ms=366 * 24 * 3600 * 1000,
)

ALL_TOPICS: tuple[Topic, ...] = (
    ALERTS_RAW,
    ALERTS_NORMALIZED,
    ALERTS_DEADLETTER,
    CHANGES,
    INCIDENTS_COMMANDS,
    INCIDENTS_EVENTS,
    INCIDENTS_TIMELINE,
    INCIDENTS_DEADLETTER,
    NOTIFICATIONS_REQUESTS,
    NOTIFICATIONS_STATUS,
    NOTIFICATIONS_DEADLETTER,
    AUDIT,
)


# correlation's inputs: one worker owns a service's alerts, commands and changes together,
# and its tables' changelogs have the same count. They must have equal partition counts.
CO_PARTITIONED: tuple[Topic, ...] = (ALERTS_NORMALIZED, INCIDENTS_COMMANDS, CHANGES)


def partition_problems(
    actual: Mapping[str, int], configured: int, topics: Iterable[Topic] = ALL_TOPICS
) -> list[str]:
    """What disagrees between the broker's topics (name -> partitions; topics it lacks are
    left out) and the setting: a topic with another count than it would be created with,
    and co-partitioned topics with unequal counts (correlation cannot run then)."""
    problems = []
    for topic in topics:
        found = actual.get(topic.name)
        expected = topic.partition_count(configured)
        if found is not None and found != expected:
            problems.append(
                f"topic {topic.name} has {found} partitions, TOCSIN_KAFKA_PARTITIONS={configured} "
                f"expects {expected}"
            )
    counts = {t.name: actual[t.name] for t in CO_PARTITIONED if t.name in actual}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in counts.items())
        problems.append(f"co-partitioned topics have unequal partition counts: {listed}")
    return problems


@dataclass(frozen=True)
class ConsumerGroup:
    """A service's Kafka consumer group and the topics it reads (`tocsin admin lag` shows
    each one's lag; `tocsin admin replay` resets its offsets)."""

    service: str
    group_id: str
    topics: tuple[str, ...]


INGEST_RAW_GROUP = ConsumerGroup("alert-ingest", "tocsin-ingest-raw", (ALERTS_RAW.name,))
# faust's consumer group is the app id (TOCSIN_CORRELATION_APP_ID may rename it).
CORRELATION_GROUP = ConsumerGroup(
    "correlation",
    "tocsin-correlation",
    (ALERTS_NORMALIZED.name, CHANGES.name, INCIDENTS_COMMANDS.name),
)
ESCALATION_GROUP = ConsumerGroup("escalation", "tocsin-escalation", (INCIDENTS_EVENTS.name,))
NOTIFICATION_GROUP = ConsumerGroup(
    "notification", "tocsin-notification", (NOTIFICATIONS_REQUESTS.name,)
)

CONSUMER_GROUPS: tuple[ConsumerGroup, ...] = (
    INGEST_RAW_GROUP,
    CORRELATION_GROUP,
    ESCALATION_GROUP,
    NOTIFICATION_GROUP,
)

# Header naming the wire format of a record on alerts.raw.
FORMAT_HEADER = "tocsin-format"


def by_name(name: str) -> Topic:
    for topic in ALL_TOPICS:
        if topic.name == name:
            return topic
    raise KeyError(f"unknown topic {name!r}; known: {[t.name for t in ALL_TOPICS]}")
