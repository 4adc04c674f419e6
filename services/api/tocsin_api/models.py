"""The API's request and response bodies: the OpenAPI document's schemas come from here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Status = Literal["triggered", "acknowledged", "resolved"]
UrgencyName = Literal["high", "low"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors -----------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str = Field(description="the request field, e.g. `duration_seconds` or `status[0]`")
    problem: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


# --- incidents --------------------------------------------------------------------------


class Change(BaseModel):
    id: str
    summary: str
    source: str
    timestamp: str | None
    service_id: str | None = None
    change_id: str | None = Field(None, description="the change this event is about")
    kind: Literal["deploy", "rollback", "config", "feature_flag"] | None = Field(
        None, description="none: not said (a plain change event)"
    )
    status: Literal["started", "succeeded", "failed", "rolled_back"] | None = Field(
        None, description="as this event said; none: a point-in-time change"
    )
    version: str | None = None
    environment: str | None = None
    rollback_of: str | None = Field(None, description="kind rollback: the change_id it undoes")


class ProbableCause(BaseModel):
    rank: int
    reason: str
    change: Change


ImpactName = Literal["operational", "degraded_performance", "partial_outage", "major_outage"]


class Incident(BaseModel):
    id: str
    service_id: str
    title: str
    status: Status
    urgency: UrgencyName | None
    severity: Literal["critical", "error", "warning", "info"] | None
    group_key: str
    escalation_policy_id: str | None
    assigned_user_id: str | None
    alert_count: int
    open_alert_count: int
    created_at: str | None
    updated_at: str | None
    resolved_at: str | None
    snoozed_until: str | None
    dedup_keys: list[str]
    labels: dict[str, str]
    held_by_incident_id: str | None
    flapping: bool
    suppressed: bool
    suppressed_reason: str | None
    priority: str | None = Field(description="set by a priority command, e.g. 'P1'")
    probable_causes: list[ProbableCause]
    impact: ImpactName | None = Field(
        default=None,
        description="the public impact a responder set (PUT .../impact); null: it follows "
        "the urgency (status_page.impact)",
    )
    etag: str = Field(description="the incident's ETag, as the ETag header of GET carries it")


class IncidentList(BaseModel):
    incidents: list[Incident]
    next_cursor: str | None = Field(description="give it back as `cursor`; null on the last page")


class PublicStatusUpdate(BaseModel):
    status: str
    message: str
    public_title: str


class LogEntry(BaseModel):
    id: str
    type: str
    at: str | None
    actor: str
    message: str
    command_id: str | None
    incident_status: Status
    alert_id: str | None
    status_update: PublicStatusUpdate | None = Field(
        default=None, description="on a status_updated entry: what the public page shows"
    )


class LogEntries(BaseModel):
    log_entries: list[LogEntry]


class Link(BaseModel):
    href: str
    text: str


class Alert(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    service_id: str
    integration_key: str | None = Field(description="masked: its last four characters")
    dedup_key: str
    action: str
    severity: str | None
    summary: str
    source: str
    component: str | None
    group: str | None
    class_: str | None = Field(alias="class")
    labels: dict[str, str]
    details: dict[str, Any]
    links: list[Link]
    source_time: str | None
    received_time: str | None


class Alerts(BaseModel):
    alerts: list[Alert]


class Delivery(BaseModel):
    request_id: str
    incident_id: str
    user_id: str
    contact_method_id: str
    channel: str
    outcome: str
    attempt: int
    detail: str
    at: str | None


class Deliveries(BaseModel):
    deliveries: list[Delivery]


class Accepted(BaseModel):
    incident_id: str
    command_id: str


class SnoozeBody(Strict):
    duration_seconds: int = Field(
        ge=1, description="snooze for this long (at most limits.snooze_max)"
    )


class ReassignBody(Strict):
    user_ids: list[str] | None = Field(
        default=None, min_length=1, max_length=1, description="exactly one person"
    )
    escalation_policy_id: str | None = Field(default=None, min_length=1)


class NoteBody(Strict):
    content: str = Field(min_length=1)


class PriorityBody(Strict):
    priority: str = Field(
        min_length=1,
        max_length=32,
        description="a priority id, e.g. 'P1' (one of insight.priorities when any are set)",
    )


class StatusUpdateBody(Strict):
    status: Literal["investigating", "identified", "monitoring", "resolved"] = Field(
        description="Statuspage's incident status"
    )
    message: str = Field(
        min_length=1,
        max_length=400_000,
        description="for the public (cleaned; e-mail addresses, private IP addresses and "
        "secret-like words redacted; at most status_page.message_max_chars)",
    )
    public_title: str | None = Field(
        default=None,
        min_length=1,
        max_length=800,
        description="the incident's title on the status page: required on its first update",
    )


class ImpactBody(Strict):
    impact: ImpactName | None = Field(
        description="the incident's public impact: the state of its components on the status "
        "page while it is open (operational: none); null clears it (it follows the urgency)"
    )


class ImpactSet(BaseModel):
    incident_id: str
    command_id: str
    impact: ImpactName | None


class StatusUpdatePosted(BaseModel):
    incident_id: str
    command_id: str
    status: str
    message: str = Field(description="as the public will read it")
    public_title: str
    redactions: list[str] = Field(description="what was redacted: email, address, secret")


class ComponentOverrideBody(Strict):
    state: Literal[
        "operational", "under_maintenance", "degraded_performance", "partial_outage", "major_outage"
    ] = Field(description="Statuspage's component state shown while the override lasts")
    until: AwareDatetime | None = Field(
        default=None, description="when the override ends (RFC 3339); none: until removed"
    )


class ComponentOverrideOut(BaseModel):
    component_id: str
    state: str
    actor: str
    until: str | None


class SubscriptionBody(Strict):
    kind: Literal["email", "webhook"] = Field(
        description="email: starts pending, confirmed by the link sent to the address; "
        "webhook: confirmed at once, deliveries signed (X-Tocsin-Signature)"
    )
    address: str = Field(
        max_length=2000, description="an e-mail address, or an http:// or https:// URL"
    )
    components: list[str] = Field(
        default_factory=list,
        max_length=500,
        description="the public component ids to hear about; none: every component",
    )


class SubscriptionOut(BaseModel):
    """A status page subscription (its link tokens are never shown)."""

    subscription_id: str
    kind: str
    address: str
    components: list[str] = Field(description="component ids; empty: every component")
    state: str = Field(description="pending | confirmed | unsubscribed")
    created_at: str
    created_by: str
    confirmed_at: str | None
    ended_at: str | None


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut]


class AutomationDecisionBody(Strict):
    reason: str = Field(default="", max_length=1000, description="why, on the timeline")


class AutomationApproval(BaseModel):
    """One firing of an automation rule that waited for approval (docs/automation.md)."""

    key: str = Field(description="the firing's idempotency key")
    rule_id: str
    incident_id: str
    trigger: str = Field(description="triggered, acknowledged, resolved or 'level N'")
    state: Literal["pending", "approved", "rejected", "expired"]
    decided_by: str
    reason: str
    requested_at: AwareDatetime | None
    expires_at: AwareDatetime | None
    decided_at: AwareDatetime | None


class AutomationDecision(BaseModel):
    approvals: list[AutomationApproval]


class AutomationApprovals(BaseModel):
    """Every firing of the incident that waited for approval, as of now (a pending one past
    its expiry is ``expired``)."""

    approvals: list[AutomationApproval]


class BulkItem(Strict):
    id: str = Field(min_length=1)
    etag: str | None = None


class BulkBody(Strict):
    action: Literal["acknowledge", "resolve", "snooze", "reassign"]
    incidents: list[BulkItem] = Field(min_length=1, max_length=100)
    duration_seconds: int | None = Field(default=None, ge=1)
    user_ids: list[str] | None = Field(default=None, min_length=1, max_length=1)
    escalation_policy_id: str | None = Field(default=None, min_length=1)


class BulkResult(BaseModel):
    id: str
    status: int = Field(description="the HTTP status the action alone would have answered")
    command_id: str | None = None
    detail: str | None = None


class BulkResults(BaseModel):
    results: list[BulkResult]


# --- services, policies, users ----------------------------------------------------------


class Integration(BaseModel):
    key: str = Field(description="masked: its last four characters")
    type: str
    name: str


class Window(BaseModel):
    start: str
    end: str
    description: str


class ServiceOut(BaseModel):
    id: str
    name: str
    description: str
    team_id: str | None
    escalation_policy_id: str
    depends_on: list[str]
    integrations: list[Integration]
    heartbeat_ids: list[str]
    maintenance_windows: list[Window]


class Services(BaseModel):
    services: list[ServiceOut]


class Heartbeat(BaseModel):
    id: str
    service_id: str
    interval_seconds: float
    grace_seconds: float
    last_ping_at: str | None
    down: bool
    ping_url_issued: bool


class Heartbeats(BaseModel):
    heartbeats: list[Heartbeat]


class Target(BaseModel):
    type: str
    id: str


class Level(BaseModel):
    delay_seconds: float
    targets: list[Target]


class EscalationPolicyOut(BaseModel):
    id: str
    name: str
    description: str
    repeat: int
    levels: list[Level]


class EscalationPolicies(BaseModel):
    escalation_policies: list[EscalationPolicyOut]


class UserOut(BaseModel):
    id: str
    name: str
    email: str
    time_zone: str
    team_ids: list[str]


class Users(BaseModel):
    users: list[UserOut]


class Me(BaseModel):
    id: str
    kind: str
    admin: bool
    team_roles: dict[str, str]
    scope: str | None
    user: UserOut | None = None


class ContactMethodOut(BaseModel):
    id: str
    type: str
    address: str
    name: str


class ContactMethods(BaseModel):
    contact_methods: list[ContactMethodOut]


class Rule(BaseModel):
    delay_seconds: float
    contact_method_id: str


class NotificationRules(BaseModel):
    high: list[Rule]
    low: list[Rule]


class TestNotification(BaseModel):
    request_id: str
    channel: str
    outcome: str
    detail: str


# --- on call, schedules -----------------------------------------------------------------


class OnCall(BaseModel):
    user_id: str
    schedule_id: str | None
    escalation_policy_id: str | None
    escalation_level: int | None
    start: str | None
    end: str | None


class OnCalls(BaseModel):
    oncalls: list[OnCall]


class ScheduleSummary(BaseModel):
    id: str
    name: str
    description: str
    team_id: str | None
    time_zone: str


class Schedules(BaseModel):
    schedules: list[ScheduleSummary]


class Span(BaseModel):
    start: str | None
    end: str | None
    user_ids: list[str] = Field(description="empty: nobody is on call (a gap)")


class OverrideBody(Strict):
    user_id: str = Field(min_length=1)
    start: AwareDatetime
    end: AwareDatetime


class Override(BaseModel):
    id: str
    schedule_id: str
    user_id: str
    start: str | None
    end: str | None
    created_by: str | None
    from_config: bool = Field(
        False, description="set in the config file (id config:N); only runtime ones are deletable"
    )


class RenderedLayer(BaseModel):
    name: str = Field(description="may be empty: the layer is then known by its place")
    spans: list[Span] = Field(description="where this layer alone puts someone on call")


class RenderedSchedule(ScheduleSummary):
    since: str
    until: str
    final_schedule: list[Span]
    layers: list[RenderedLayer] = Field(description="each layer alone, in order (later win)")
    overrides: list[Override] = Field(description="overrides touching the range, by start")


class IcalUrl(BaseModel):
    url: str


# --- silences ---------------------------------------------------------------------------


class SilenceBody(Strict):
    matchers: list[str] = Field(
        min_length=1, description='Alertmanager matchers: `name=value`, `name=~"regex"`, ...'
    )
    service_id: str | None = Field(default=None, description="empty: every service (admins)")
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    duration_seconds: int | None = Field(default=None, ge=1)
    comment: str = ""


class Silence(BaseModel):
    id: str
    service_id: str | None
    matchers: list[str]
    starts_at: str | None
    ends_at: str | None
    created_by: str
    comment: str


class Silences(BaseModel):
    silences: list[Silence]


class MaintenanceWindowBody(Strict):
    service_id: str = Field(min_length=1)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    duration_seconds: int | None = Field(default=None, ge=1)
    description: str = Field(default="", description="internal: never on the status page")
    public_title: str | None = Field(
        default=None,
        max_length=800,
        description=(
            "the window's title on the public status page (cleaned and redacted as status "
            'updates are, at most 200 characters); none: the page says "Scheduled maintenance"'
        ),
    )


class MaintenanceWindow(BaseModel):
    id: str | None = Field(description="null: planned in the config file (not deletable here)")
    service_id: str
    start: str | None
    end: str | None
    description: str
    public_title: str | None = Field(
        default=None,
        description="what the public status page calls it (config: its description)",
    )
    source: Literal["config", "runtime"]
    redactions: list[str] | None = Field(
        default=None, description="on creation: what was redacted from the public title"
    )


class MaintenanceWindows(BaseModel):
    maintenance_windows: list[MaintenanceWindow]


# --- audit, tokens ----------------------------------------------------------------------


class AuditRecord(BaseModel):
    id: str
    at: str | None
    actor: str
    actor_kind: str | None
    action: str
    resource_kind: str
    resource_id: str
    allowed: bool
    reason: str
    service: str
    method: str
    trace_id: str | None


class AuditRecords(BaseModel):
    audit_records: list[AuditRecord]
    next_cursor: str | None


class Token(BaseModel):
    id: str
    subject_id: str
    subject_kind: str
    name: str
    scope: str | None
    created_at: str | None
    expires_at: str | None
    last_used_at: str | None
    created_by: str


class Tokens(BaseModel):
    tokens: list[Token]


class TokenBody(Strict):
    name: str = Field(min_length=1, max_length=100)
    scope: Literal["viewer", "responder", "manager", "admin"] | None = None
    expires_in_days: int | None = Field(default=None, ge=1, le=366)
    subject_id: str | None = Field(default=None, description="default: yourself (admins: anyone)")


class CreatedToken(Token):
    token: str = Field(description="the secret: shown once, kept nowhere")


class Health(BaseModel):
    status: str


# --- analytics (insight) ------------------------------------------------------------------

GroupName = Literal["service", "team", "user", "urgency", "priority"]
PeriodName = Literal["day", "week", "month"]
MetricName = Literal[
    "seconds_to_first_ack",
    "seconds_to_resolve",
    "seconds_to_engage",
    "seconds_to_mobilize",
    "incident_count",
    "escalation_rate",
    "auto_resolved_share",
    "alerts_per_incident",
]


class Distribution(BaseModel):
    """A duration KPI over the group's incidents, in seconds; ``count`` is how many had a
    value (an incident nobody acknowledged has no time to first ack)."""

    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    max: float


class ReportRow(BaseModel):
    service_id: str | None = Field(None, description="with group_by=service")
    team_id: str | None = Field(None, description="with group_by=team")
    user_id: str | None = Field(
        None, description="with group_by=user: who acknowledged first ('' for nobody)"
    )
    urgency: str | None = Field(None, description="with group_by=urgency")
    priority: str | None = Field(
        None, description="with group_by=priority: the matching insight.priorities rule's id"
    )
    period_start: str | None = Field(description="the period's start, with aggregate_unit")
    total_incident_count: int
    seconds_to_first_ack: Distribution = Field(description="PagerDuty: mean_seconds_to_first_ack")
    seconds_to_resolve: Distribution = Field(description="PagerDuty: mean_seconds_to_resolve")
    seconds_to_engage: Distribution = Field(description="PagerDuty: mean_seconds_to_engage")
    seconds_to_mobilize: Distribution = Field(description="PagerDuty: mean_seconds_to_mobilize")
    escalation_rate: float = Field(description="share of incidents that reached level 2+")
    auto_resolved_share: float
    alerts_per_incident: float
    suppressed_share: float
    total_notifications: int
    total_escalations: int = Field(description="PagerDuty: total_escalation_count")
    total_reassignments: int
    total_snoozed_seconds: float


class Report(BaseModel):
    data: list[ReportRow]
    group_by: list[GroupName]
    aggregate_unit: PeriodName | None
    time_zone: str
    definition_version: str


class TimeseriesPoint(BaseModel):
    period_start: str | None
    value: float
    count: int


class Trend(BaseModel):
    """The last period against the one before, with a bootstrap confidence interval of
    the difference; ``significant`` is false when the interval holds zero."""

    current: float
    previous: float
    difference: float
    ci_low: float
    ci_high: float
    significant: bool
    summary: str


class Timeseries(BaseModel):
    metric: MetricName
    aggregate_unit: PeriodName
    points: list[TimeseriesPoint]
    trend: Trend | None
    definition_version: str


class Breach(BaseModel):
    incident_id: str
    service_id: str
    team_id: str
    priority: str
    kind: str = Field(description="ack | resolve")
    target_seconds: float = Field(description="in business time")
    business_seconds: float = Field(description="how long it took, in business time")
    created_at: str | None


class Breaches(BaseModel):
    breaches: list[Breach]
    ack_within_target_rate: float
    resolve_within_target_rate: float


class RecurringProblem(BaseModel):
    problem_id: str
    service_id: str
    fingerprint: str = Field(description="the group or dedup key the incidents share")
    incident_count: int
    incident_ids: list[str]
    first_seen: str | None
    last_seen: str | None


class Problems(BaseModel):
    problems: list[RecurringProblem]


# --- deploy gate (docs/change-control.md) ------------------------------------------------

GateOutcomeName = Literal["pass", "warn", "fail"]


class GateEvaluateBody(Strict):
    service: str = Field(min_length=1, max_length=255)
    environment: str = Field(min_length=1, max_length=255)
    version: str = Field(default="", max_length=255)
    change_id: str = Field(default="", max_length=255)
    dry_run: bool = False


class GateRuleResult(BaseModel):
    rule: str
    outcome: GateOutcomeName
    reason: str


class GateOverrideInfo(BaseModel):
    actor: str
    reason: str
    created_at: str
    expires_at: str
    overridden_outcome: GateOutcomeName


class GateDecision(BaseModel):
    """The gate's answer; an Argo Rollouts ``web`` metric reads ``jsonPath: "{$.outcome}"``."""

    evaluation_id: str
    service: str
    environment: str
    version: str
    change_id: str
    outcome: GateOutcomeName
    passed: bool
    evaluated_outcome: GateOutcomeName
    dry_run: bool
    rules: list[GateRuleResult]
    evaluated_at: str
    valid_until: str
    override: GateOverrideInfo | None


class GateOverrideBody(Strict):
    """Either ``evaluation_id`` (of a failed or warned decision), or ``service`` and
    ``environment`` (and ``version``): evaluated now, then overridden."""

    evaluation_id: str = Field(default="", max_length=255)
    service: str = Field(default="", max_length=255)
    environment: str = Field(default="", max_length=255)
    version: str = Field(default="", max_length=255)
    reason: str = Field(min_length=1, max_length=1000)


class GateFreezeBody(Strict):
    ends_at: AwareDatetime
    starts_at: AwareDatetime | None = Field(default=None, description="default: now")
    reason: str = Field(min_length=1, max_length=1000)
    services: list[str] = Field(
        default_factory=list, max_length=100, description="empty: every service (admin only)"
    )
    environments: list[str] = Field(
        default_factory=list, max_length=100, description="empty: every environment"
    )


class GateFreeze(BaseModel):
    id: str
    starts_at: str
    ends_at: str
    author: str
    reason: str
    services: list[str]
    environments: list[str]


class GateFreezes(BaseModel):
    freezes: list[GateFreeze]


class ChangeTimelineEntry(BaseModel):
    at: str
    kind: Literal["change_event", "gate_decision", "gate_override"]
    actor: str = Field(description="who asked the gate, who overrode; a change event's source")
    summary: str
    status: str = Field(description="change_event: the status it reported")
    outcome: str = Field(description="gate_decision: what the caller got; gate_override: pass")
    evaluation_id: str
    environment: str
    version: str
    event_id: str


class ChangeTimeline(BaseModel):
    """A change's history, oldest first: its change events (and its rollbacks'), and every
    deploy-gate decision asked with its change id and every override of one."""

    change_id: str
    service: str
    entries: list[ChangeTimelineEntry]


class ServiceAvailability(BaseModel):
    """Over the service's SLO window: availability (0..1, impact weighted: major 1, partial
    0.5, degraded 0.25), its error budget, what is left of it and how fast it burns."""

    service_id: str
    target_percent: float
    window_start: str | None
    window_end: str | None
    availability: float
    up_time_pct: float = Field(description="major impact only (PagerDuty's up_time_pct)")
    impact_seconds: float
    error_budget_seconds: float
    budget_remaining_seconds: float
    budget_remaining_ratio: float
    burn_rate: float


class ChangeFailure(BaseModel):
    total_changes: int
    failed_changes: int
    change_failure_rate: float = Field(description="failed / changes (0 without changes)")
    unrecovered: int
    recovery_seconds: Distribution = Field(description="failed-change recovery time (DORA)")


class PersonInterruptions(BaseModel):
    user_id: str
    total_notifications: int
    total_interruptions: int
    total_business_hour_interruptions: int
    total_off_hour_interruptions: int
    total_sleep_hour_interruptions: int


class NoisySource(BaseModel):
    source: str
    alerts: int


class Overview(BaseModel):
    availability: list[ServiceAvailability]
    change_failure: ChangeFailure
    interruptions: list[PersonInterruptions]
    top_sources: list[NoisySource]
    definition_version: str


class AutomationDryRunBody(Strict):
    """Exactly one of ``rule_id`` and ``rule``; the window defaults to the 30 days to now."""

    rule_id: str = Field(default="", max_length=255, description="a configured rule's id")
    rule: dict[str, Any] | None = Field(
        default=None,
        description="a rule as written in the config's automation.rules (YAML as JSON)",
    )
    since: AwareDatetime | None = Field(default=None, description="default: 30 days before until")
    until: AwareDatetime | None = Field(
        default=None, description="default: now; at most 366 days after since"
    )


class AutomationDryRun(BaseModel):
    """How often the rule would have fired over past incidents (docs/automation.md#dry-run)."""

    rule_id: str
    since: str
    until: str
    fires: int = Field(description="firings: each (incident, trigger) once")
    incidents: int = Field(description="distinct incidents it would have fired for")
    by_trigger: dict[str, int] = Field(description="'triggered', 'level 2' ... -> firings")
    sample: list[str] = Field(description="the first incident ids (at most 20), oldest first")
    summary: str = Field(description="e.g. rule 'x' would have fired 7 times in 30 days")
    incidents_read: int = Field(description="incidents with a transition in the window")
    definition_version: str
