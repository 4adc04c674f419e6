"""Tocsin's configuration: the YAML model, its loader and validator, and hot reload.

Typical use in a service::

    from tocsin_common.config import ConfigStore

    store = ConfigStore(settings.config_path)      # raises ConfigError if the file is bad
    store.install_sighup()
    asyncio.create_task(store.watch(settings.config_reload_seconds))
    service, integration = store.current.service_for_key(routing_key) or (None, None)

See docs/configuration.md for the file format.
"""

from .durations import Duration, DurationError, PositiveDuration, format_duration, parse_duration
from .loader import (
    ConfigError,
    ConfigIssue,
    format_path,
    load_config,
    parse_config,
    read_config_file,
)
from .model import (
    BUILTIN_CONTACT_METHOD_TYPES,
    ContactMethod,
    ContactMethodType,
    EmailSettings,
    EscalationLevel,
    EscalationPolicy,
    EscalationTarget,
    FlapDetection,
    Grouping,
    Heartbeat,
    InhibitRule,
    Integration,
    IntegrationType,
    Layer,
    Limits,
    LinkSettings,
    MaintenanceWindow,
    Matcher,
    NotificationRule,
    NotificationRules,
    NotificationSettings,
    Override,
    Restriction,
    Schedule,
    Service,
    Severity,
    SeverityUrgency,
    Team,
    TocsinConfig,
    TwilioSettings,
    Urgency,
    UrgencyRules,
    User,
    WebhookSettings,
    Weekday,
)
from .watcher import ConfigStore, Subscriber

__all__ = [
    "BUILTIN_CONTACT_METHOD_TYPES",
    "ConfigError",
    "ConfigIssue",
    "ConfigStore",
    "ContactMethod",
    "ContactMethodType",
    "Duration",
    "DurationError",
    "EmailSettings",
    "EscalationLevel",
    "EscalationPolicy",
    "EscalationTarget",
    "FlapDetection",
    "Grouping",
    "Heartbeat",
    "InhibitRule",
    "Integration",
    "IntegrationType",
    "Layer",
    "Limits",
    "LinkSettings",
    "MaintenanceWindow",
    "Matcher",
    "NotificationRule",
    "NotificationRules",
    "NotificationSettings",
    "Override",
    "PositiveDuration",
    "Restriction",
    "Schedule",
    "Service",
    "Severity",
    "SeverityUrgency",
    "Subscriber",
    "Team",
    "TocsinConfig",
    "TwilioSettings",
    "Urgency",
    "UrgencyRules",
    "User",
    "WebhookSettings",
    "Weekday",
    "format_duration",
    "format_path",
    "load_config",
    "parse_config",
    "parse_duration",
    "read_config_file",
]
