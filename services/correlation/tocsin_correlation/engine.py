"""The correlation engine: alert events and commands in, incident events out (pure).

State is mappings, which the faust worker backs with changelog tables and unit tests with
dicts (all keyed so that they live in the partition of the service they concern):
- alerts:    alert_key(service, dedup key) -> AlertState JSON (with its flap history)
- incidents: incident id -> IncidentState JSON
- groups:    service + group key -> id of the open incident taking that group's alerts
             (content and time grouping)
- held:      incident id -> {holder, holder_service, service_id} while an upstream holds it
- sources:   service id -> {alert key: labels} of firing alerts that can inhibit others
- changes:   service id -> recent ChangeRecord JSONs (changes.py)

What lives in other partitions (silences, upstream services' open incidents and changes)
comes in a :class:`View` the worker builds before each alert.

Ids of incidents and events are derived from the input event's id, so reprocessing the
same input after a crash (at-least-once) yields the same ids and downstream can dedup.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from tocsin.v1 import alert_pb2, incident_pb2
from tocsin_common.config import TocsinConfig
from tocsin_common.config.model import Service
from tocsin_common.statuspage.components import parse_impact
from tocsin_common.timeutil import set_timestamp

from tocsin_correlation import grouping
from tocsin_correlation.changes import ChangeRecord, add_change, probable_causes
from tocsin_correlation.dedup import AlertState, AlertStatus, Decision, alert_key, decide
from tocsin_correlation.flapping import FlapState, flap_thresholds, percent_state_change
from tocsin_correlation.inhibition import inhibitor, is_source
from tocsin_correlation.matchers import alert_labels
from tocsin_correlation.silences import Silence, silencing

_NAMESPACE = uuid.UUID("6f1c3c1e-3f5e-4d5c-9a55-7c0e8a3b9d10")

_ACTIONS = {
    alert_pb2.ALERT_ACTION_TRIGGER: "trigger",
    alert_pb2.ALERT_ACTION_ACKNOWLEDGE: "acknowledge",
    alert_pb2.ALERT_ACTION_RESOLVE: "resolve",
}
_SEVERITY_NAMES = {
    alert_pb2.SEVERITY_CRITICAL: "critical",
    alert_pb2.SEVERITY_ERROR: "error",
    alert_pb2.SEVERITY_WARNING: "warning",
    alert_pb2.SEVERITY_INFO: "info",
}
_STATUS = {
    "triggered": incident_pb2.INCIDENT_STATUS_TRIGGERED,
    "acknowledged": incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED,
    "resolved": incident_pb2.INCIDENT_STATUS_RESOLVED,
}


_NAMESPACE_BYTES = _NAMESPACE.bytes


# The hex digit that carries the RFC 4122 variant (0b10xx) in place of each digest digit.
_VARIANT_DIGIT = {digit: "89ab"[int(digit, 16) & 0x3] for digit in "0123456789abcdef"}


def derived_id(*parts: str) -> str:
    """``str(uuid.uuid5(_NAMESPACE, "\\x1f".join(parts)))``, without the UUID object (ids
    are derived several times per input; the unit tests hold the two equal)."""
    h = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).hexdigest()
    # the version (5) replaces the 13th digit, the variant the top bits of the 17th
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"


# The config last looked up, with its services and their upstreams by id: a config is not
# changed once loaded (a reload makes a new one), and the look-ups (pydantic private
# attributes, a graph walk) ran several times per alert.
_lookups: tuple[TocsinConfig | None, dict[str, Service], dict[str, tuple[str, ...]]] = (
    None,
    {},
    {},
)


def _config_lookups(
    config: TocsinConfig,
) -> tuple[TocsinConfig | None, dict[str, Service], dict[str, tuple[str, ...]]]:
    global _lookups
    if _lookups[0] is not config:  # the object, not its id: ids are reused
        _lookups = (config, {}, {})
    return _lookups


def service_of(config: TocsinConfig, service_id: str) -> Service:
    """``config.service(service_id)`` (KeyError for an unknown one), looked up once."""
    services = _config_lookups(config)[1]
    service = services.get(service_id)
    if service is None:
        service = services[service_id] = config.service(service_id)
    return service


def upstream_of(config: TocsinConfig, service_id: str) -> tuple[str, ...]:
    """``config.upstream(service_id)`` (KeyError for an unknown one), walked once."""
    upstreams = _config_lookups(config)[2]
    upstream = upstreams.get(service_id)
    if upstream is None:
        upstream = upstreams[service_id] = config.upstream(service_id)
    return upstream


# The actor of the commands correlation sends itself (to release held incidents).
SELF_ACTOR = "correlation"

# Timeline entries from other services may not carry these types: each has its own command
# or is correlation's own decision, and escalation acts on some of them.
_RESERVED_TIMELINE_TYPES = frozenset(
    {
        incident_pb2.INCIDENT_EVENT_TYPE_UNSPECIFIED,
        incident_pb2.INCIDENT_EVENT_TYPE_TRIGGERED,
        incident_pb2.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
        incident_pb2.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED,
        incident_pb2.INCIDENT_EVENT_TYPE_RESOLVED,
        incident_pb2.INCIDENT_EVENT_TYPE_REASSIGNED,
        incident_pb2.INCIDENT_EVENT_TYPE_SNOOZED,
        incident_pb2.INCIDENT_EVENT_TYPE_HELD,
        incident_pb2.INCIDENT_EVENT_TYPE_RELEASED,
        incident_pb2.INCIDENT_EVENT_TYPE_FLAPPING,
        incident_pb2.INCIDENT_EVENT_TYPE_SUPPRESSED,
        incident_pb2.INCIDENT_EVENT_TYPE_STATUS_UPDATED,
        incident_pb2.INCIDENT_EVENT_TYPE_IMPACT_CHANGED,
        incident_pb2.INCIDENT_EVENT_TYPE_PRIORITY_CHANGED,
    }
)


@dataclass
class IncidentState:
    incident_id: str
    service_id: str
    title: str
    status: str
    urgency: str
    severity: int
    group_key: str
    escalation_policy_id: str
    created_at: float
    updated_at: float
    alert_keys: list[str] = field(default_factory=list)
    open_alert_keys: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    resolved_at: float | None = None
    assigned_user_id: str = ""
    snoozed_until: float | None = None
    held_by_incident_id: str = ""
    flapping: bool = False
    suppressed: bool = False
    suppressed_reason: str = ""
    impact: str = ""  # the public impact a responder set ("": it follows the urgency)
    priority: str = ""  # set by a priority command
    # [{"change": ChangeRecord JSON, "rank": int, "reason": str}], most likely first
    probable_causes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status != "resolved"

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copies were the engine's biggest cost.
        data = dict(self.__dict__)
        data["alert_keys"] = list(self.alert_keys)
        data["open_alert_keys"] = list(self.open_alert_keys)
        data["labels"] = dict(self.labels)
        data["probable_causes"] = list(self.probable_causes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IncidentState:
        # Its own containers: the engine changes them in place, and `data` is the table's
        # (or the batch's) value until the input's writes are kept — if they are.
        incident = cls(**data)
        incident.alert_keys = list(incident.alert_keys)
        incident.open_alert_keys = list(incident.open_alert_keys)
        incident.labels = dict(incident.labels)
        incident.probable_causes = list(incident.probable_causes)
        return incident

    def to_proto(self) -> incident_pb2.Incident:
        incident = incident_pb2.Incident()
        self.write_proto(incident)
        return incident

    def write_proto(self, incident: incident_pb2.Incident) -> None:
        """Fill `incident` (empty, e.g. an event's) with this state.

        Field by field, not by the constructor's keyword arguments: upb looks each of those
        up by name and checks enums and bools by value, 12 µs an incident, as much as the
        rest of the engine; set one by one, the same fields cost 2 µs. Fields at their
        default are left unset (the same message)."""
        incident.incident_id = self.incident_id
        incident.service_id = self.service_id
        incident.title = self.title
        incident.status = _STATUS[self.status]  # type: ignore[assignment]
        incident.urgency = (  # type: ignore[assignment]
            incident_pb2.URGENCY_HIGH if self.urgency == "high" else incident_pb2.URGENCY_LOW
        )
        incident.severity = self.severity  # type: ignore[assignment]
        incident.group_key = self.group_key
        incident.escalation_policy_id = self.escalation_policy_id
        keys = self.alert_keys
        incident.alert_count = len(keys)
        incident.open_alert_count = len(self.open_alert_keys)
        if keys:
            incident.dedup_keys.extend([k.split("\x1f", 1)[1] for k in keys])
        if self.labels:
            incident.labels.update(self.labels)
        if self.assigned_user_id:
            incident.assigned_user_id = self.assigned_user_id
        if self.held_by_incident_id:
            incident.held_by_incident_id = self.held_by_incident_id
        if self.flapping:
            incident.flapping = True
        if self.suppressed:
            incident.suppressed = True
        if self.suppressed_reason:
            incident.suppressed_reason = self.suppressed_reason
        if self.impact:
            incident.impact = self.impact
        if self.priority:
            incident.priority = self.priority
        for cause in self.probable_causes:
            incident.probable_causes.add(
                change=ChangeRecord.from_json(cause["change"]).event(),
                rank=cause["rank"],
                reason=cause["reason"],
            )
        _set_epoch(incident.created_at, self.created_at)
        _set_epoch(incident.updated_at, self.updated_at)
        if self.resolved_at is not None:
            _set_epoch(incident.resolved_at, self.resolved_at)
        if self.snoozed_until is not None:
            _set_epoch(incident.snoozed_until, self.snoozed_until)


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# The seconds of 0001-01-01 and 10000-01-01 (UTC): the range of datetime and Timestamp.
_MIN_SECONDS = -62_135_596_800
_END_SECONDS = 253_402_300_800


def _set_epoch(field: Timestamp, epoch: float) -> None:
    """``set_timestamp(field, _dt(epoch))`` without the datetime (every input stamps a new
    `now`): the same rounding to the microsecond, half to even, as
    ``datetime.fromtimestamp``. Outside the range, that path itself, which raises.

    The last stamp is remembered: an input stamps its event and its new incident (created,
    updated) with the same `now`."""
    global _last_stamp
    last = _last_stamp
    if epoch == last[0]:  # never NaN
        field.seconds = last[1]
        field.nanos = last[2]
        return
    if _MIN_SECONDS <= epoch < _END_SECONDS:  # not NaN either
        fraction, whole = math.modf(epoch)
        seconds = int(whole)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000:
            seconds += 1
            micros -= 1_000_000
        elif micros < 0:
            seconds -= 1
            micros += 1_000_000
        if seconds < _END_SECONDS:
            field.seconds = seconds
            field.nanos = micros * 1000
            _last_stamp = (epoch, seconds, micros * 1000)
            return
    set_timestamp(field, _dt(epoch))


_last_stamp: tuple[float, int, int] = (math.nan, 0, 0)  # (epoch, seconds, nanos)


@dataclass(frozen=True)
class OpenIncident:
    """An open incident of another service, as the worker's Redis index knows it."""

    incident_id: str
    created_at: float


@dataclass
class View:
    """What the engine needs from outside its partitions, gathered by the worker."""

    silences: Sequence[Silence] = ()
    # upstream service id -> its open incidents (only services upstream of the alert's)
    open_incidents: Mapping[str, Sequence[OpenIncident]] = field(default_factory=dict)
    # changes on the upstream services (the alert's own service's are in the table)
    upstream_changes: Sequence[ChangeRecord] = ()


@dataclass
class Outcome:
    """What one input did: the incident events to publish, and what to count."""

    events: list[incident_pb2.IncidentEvent] = field(default_factory=list)
    dropped: str | None = None  # why the input changed nothing, for metrics
    suppressed: str | None = None  # maintenance | silence | inhibition, for metrics

    def add(self, other: Outcome) -> Outcome:
        self.events.extend(other.events)
        return self


class CorrelationEngine:
    def __init__(
        self,
        alerts: MutableMapping[str, Any],
        incidents: MutableMapping[str, Any],
        groups: MutableMapping[str, Any],
        held: MutableMapping[str, Any] | None = None,
        sources: MutableMapping[str, Any] | None = None,
        changes: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.alerts = alerts
        self.incidents = incidents
        self.groups = groups
        self.held: MutableMapping[str, Any] = {} if held is None else held
        self.sources: MutableMapping[str, Any] = {} if sources is None else sources
        self.changes: MutableMapping[str, Any] = {} if changes is None else changes

    # --- alerts ---------------------------------------------------------------------

    def on_alert(
        self,
        alert: alert_pb2.Alert,
        config: TocsinConfig,
        now: float,
        view: View | None = None,
    ) -> Outcome:
        try:
            service = service_of(config, alert.service_id)
        except KeyError:
            return Outcome(dropped="unknown_service")  # removed from the config since ingest
        view = view or View()
        key = alert_key(alert.service_id, alert.dedup_key)
        raw = self.alerts.get(key)
        existing = AlertState.from_json(raw) if raw else None
        action = _ACTIONS.get(alert.action, "")
        if existing is not None and existing.is_open and existing.incident_id not in self.incidents:
            # its incident is gone (state lost): start afresh, never drop
            existing = AlertState("", "", AlertStatus.RESOLVED, 0, now, now, existing.states)
        decision = decide(existing, action)
        if decision is Decision.DROP:
            return Outcome(dropped=f"{action}_without_open_alert")

        # Flap detection: every trigger (new or repeated) and resolve is a check result.
        flap = FlapState(
            existing.states if existing else [],
            existing.flapping if existing else False,
            existing.incident_id if existing else "",
        )
        was_flapping = flap.flapping
        flip = (
            flap.record(0 if decision is Decision.RESOLVE else 1, *flap_thresholds(service))
            if action != "acknowledge"
            else None
        )

        if decision is Decision.NEW:
            outcome = self._new_alert(
                alert, key, service, config, now, view, flap, keep_with=was_flapping
            )
        else:
            assert existing is not None
            existing.states, existing.flapping = flap.states, flap.flapping
            outcome = self._existing_alert(alert, key, existing, decision, now)
        if flip is not None:
            outcome.add(self._flap_changed(alert, key, flip, flap, now))
        return outcome

    def _existing_alert(
        self,
        alert: alert_pb2.Alert,
        key: str,
        existing: AlertState,
        decision: Decision,
        now: float,
    ) -> Outcome:
        incident = IncidentState.from_json(self.incidents[existing.incident_id])
        existing.last_seen = now
        if decision is Decision.DUPLICATE:
            existing.count += 1
            self.alerts[key] = existing.to_json()
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_ALERT_UPDATED,
                alert,
                now,
                f"alert repeated ({existing.count} times)",
            )
        if decision is Decision.ACKNOWLEDGE:
            existing.status = AlertStatus.ACKNOWLEDGED
            self.alerts[key] = existing.to_json()
            if incident.status == "triggered":
                incident.status = "acknowledged"
                return self._emit(
                    incident,
                    incident_pb2.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
                    alert,
                    now,
                    "acknowledged by the source",
                )
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_ALERT_UPDATED,
                alert,
                now,
                "alert acknowledged by the source",
            )
        # RESOLVE
        existing.status = AlertStatus.RESOLVED
        self.alerts[key] = existing.to_json()
        self._forget_source(incident.service_id, key)
        if key in incident.open_alert_keys:
            incident.open_alert_keys.remove(key)
        if not incident.open_alert_keys and incident.is_open:
            if existing.flapping:
                return self._emit(
                    incident,
                    incident_pb2.INCIDENT_EVENT_TYPE_ALERT_UPDATED,
                    alert,
                    now,
                    "alert resolved by the source; it is flapping, so the incident stays open",
                )
            return self._resolve(incident, alert, now, "all alerts resolved", actor="source")
        return self._emit(
            incident,
            incident_pb2.INCIDENT_EVENT_TYPE_ALERT_UPDATED,
            alert,
            now,
            "alert resolved by the source",
        )

    def _flap_changed(
        self, alert: alert_pb2.Alert, key: str, started: bool, flap: FlapState, now: float
    ) -> Outcome:
        state = AlertState.from_json(self.alerts[key])
        raw = self.incidents.get(state.incident_id)
        if raw is None:
            return Outcome()
        incident = IncidentState.from_json(raw)
        percent = percent_state_change(flap.states)
        outcome = Outcome()
        if started:
            incident.flapping = True
            return outcome.add(
                self._emit(
                    incident,
                    incident_pb2.INCIDENT_EVENT_TYPE_FLAPPING,
                    alert,
                    now,
                    f"alert {alert.dedup_key} started flapping ({percent:.1f} % state change)",
                )
            )
        incident.flapping = any(
            AlertState.from_json(self.alerts[k]).flapping
            for k in incident.alert_keys
            if k != key and k in self.alerts
        )
        outcome.add(
            self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_FLAPPING,
                alert,
                now,
                f"alert {alert.dedup_key} stopped flapping ({percent:.1f} % state change)",
            )
        )
        if incident.is_open and not incident.open_alert_keys and not incident.flapping:
            outcome.add(self._resolve(incident, alert, now, "all alerts resolved", actor="source"))
        return outcome

    def _suppression(
        self,
        alert: alert_pb2.Alert,
        key: str,
        service: Service,
        labels: dict[str, str],
        now: float,
        view: View,
    ) -> tuple[str, str] | None:
        """(kind, reason) when the new alert is suppressed, else None."""
        if service.maintenance_windows:
            at = _dt(now)
            for window in service.maintenance_windows:
                if window.active_at(at):
                    what = f" ({window.description})" if window.description else ""
                    return "maintenance", (
                        f"maintenance window {window.start.isoformat()} to "
                        f"{window.end.isoformat()}{what}"
                    )
        silence = silencing(view.silences, alert.service_id, labels, now)
        if silence is not None:
            note = f": {silence.comment}" if silence.comment else ""
            by = f" by {silence.created_by}" if silence.created_by else ""
            return "silence", f"silenced by {silence.silence_id}{by}{note}"
        if service.inhibit_rules:
            sources = self.sources.get(alert.service_id) or {}
            source_key = inhibitor(service.inhibit_rules, key, labels, sources)
            if source_key is not None:
                return "inhibition", f"inhibited by alert {source_key.split(chr(31), 1)[1]}"
        return None

    def _forget_source(self, service_id: str, key: str) -> None:
        sources = self.sources.get(service_id)
        if sources and key in sources:
            self.sources[service_id] = {k: v for k, v in sources.items() if k != key}

    def _new_alert(
        self,
        alert: alert_pb2.Alert,
        key: str,
        service: Service,
        config: TocsinConfig,
        now: float,
        view: View,
        flap: FlapState,
        keep_with: bool,
    ) -> Outcome:
        # Only silences and inhibition rules match against labels: built for them alone.
        labels = alert_labels(alert) if view.silences or service.inhibit_rules else {}
        suppression = self._suppression(alert, key, service, labels, now, view)
        if service.inhibit_rules and is_source(service.inhibit_rules, labels):
            self.sources[alert.service_id] = {
                **(self.sources.get(alert.service_id) or {}),
                key: labels,
            }
        mode = service.grouping.mode
        grouped = mode != "none"
        gkey = grouping.group_key(alert, mode, service.grouping.fields)
        # Suppressed alerts group among themselves: joining a paging incident would hide
        # nothing, and an unsuppressed alert must never join a silent incident.
        slot = f"{alert.service_id}\x1f{gkey}" + ("\x1fsuppressed" if suppression else "")
        # Mode none keeps no group: its group is the alert itself, whose incident a new
        # alert of the same key joins only while flapping (keep_with, below), and an
        # entry per alert was a table write and a changelog record for nothing.
        incident_id = self.groups.get(slot) if grouped else None
        window = service.grouping.window.total_seconds() if grouped else None
        state = AlertState(
            alert_id=derived_id(alert.event_id, "alert"),
            incident_id="",
            status=AlertStatus.TRIGGERED,
            count=1,
            first_seen=now,
            last_seen=now,
            states=flap.states,
            flapping=flap.flapping,
        )
        incident: IncidentState | None = None
        if keep_with and flap.incident_id:
            # A flapping alert comes back to the incident it kept open: no new page.
            raw = self.incidents.get(flap.incident_id)
            candidate = IncidentState.from_json(raw) if raw else None
            if candidate is not None and candidate.is_open:
                incident = candidate
        if incident is None and incident_id:
            raw = self.incidents.get(incident_id)
            candidate = IncidentState.from_json(raw) if raw else None
            if (
                candidate is not None
                and candidate.is_open
                and grouping.joins_open_incident(candidate.created_at, now, window)
                and len(candidate.alert_keys) < service.grouping.max_alerts
            ):
                incident = candidate
        if incident is not None:
            state.incident_id = incident.incident_id
            if key not in incident.alert_keys:
                incident.alert_keys.append(key)
            if key not in incident.open_alert_keys:
                incident.open_alert_keys.append(key)
            self.alerts[key] = state.to_json()
            note = f" ({suppression[1]})" if suppression else ""
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_ALERT_ADDED,
                alert,
                now,
                f"alert joined: {alert.summary}{note}",
            )
        severity = _SEVERITY_NAMES.get(alert.severity)  # None: the service's default urgency
        incident = IncidentState(
            incident_id=derived_id(alert.event_id, "incident"),
            service_id=alert.service_id,
            title=alert.summary,
            status="triggered",
            urgency=service.urgency.for_severity(severity),
            severity=int(alert.severity),
            group_key=gkey,
            escalation_policy_id=service.escalation_policy,
            created_at=now,
            updated_at=now,
            alert_keys=[key],
            open_alert_keys=[key],
            labels=dict(alert.labels),
            flapping=flap.flapping,
        )
        incident.probable_causes = self._causes(alert.service_id, service, config, now, view)
        state.incident_id = incident.incident_id
        self.alerts[key] = state.to_json()
        if grouped:
            self.groups[slot] = incident.incident_id
        if suppression is not None:
            incident.suppressed = True
            incident.suppressed_reason = suppression[1]
            outcome = self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_SUPPRESSED,
                alert,
                now,
                f"suppressed: {alert.summary} ({suppression[1]})",
            )
            outcome.suppressed = suppression[0]
            return outcome
        holder = self._holder(alert.service_id, config, view)
        if holder is not None:
            holder_service, holder_incident = holder
            incident.held_by_incident_id = holder_incident
            self.held[incident.incident_id] = {
                "holder": holder_incident,
                "holder_service": holder_service,
                "service_id": incident.service_id,
            }
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_HELD,
                alert,
                now,
                f"held: upstream service {holder_service} has open incident {holder_incident}",
            )
        return self._emit(
            incident,
            incident_pb2.INCIDENT_EVENT_TYPE_TRIGGERED,
            alert,
            now,
            f"triggered: {alert.summary}",
        )

    def _holder(self, service_id: str, config: TocsinConfig, view: View) -> tuple[str, str] | None:
        """(service, incident) of the nearest upstream open incident, oldest first."""
        for upstream in upstream_of(config, service_id):
            candidates = [
                OpenIncident(i.incident_id, i.created_at)
                for i in view.open_incidents.get(upstream, ())
            ]
            if candidates:
                first = min(candidates, key=lambda i: (i.created_at, i.incident_id))
                return upstream, first.incident_id
        return None

    def _causes(
        self, service_id: str, service: Service, config: TocsinConfig, now: float, view: View
    ) -> list[dict[str, Any]]:
        own = [ChangeRecord.from_json(c) for c in self.changes.get(service_id) or ()]
        if not own and not view.upstream_changes:
            return []
        causes = probable_causes(
            service_id,
            upstream_of(config, service_id),
            [*own, *view.upstream_changes],
            now,
            service.change_lookback.total_seconds(),
        )
        records = {c.event_id: c for c in [*own, *view.upstream_changes]}
        return [
            {
                "change": records[c.change.event_id].to_json(),
                "rank": c.rank,
                "reason": c.reason,
            }
            for c in causes
        ]

    # --- changes --------------------------------------------------------------------

    def on_change(
        self, change: alert_pb2.ChangeEvent, now: float, retention: float
    ) -> ChangeRecord:
        """Keep a change on its service for ``retention`` seconds."""
        record = ChangeRecord.from_event(change, now)
        kept = self.changes.get(change.service_id) or []
        self.changes[change.service_id] = add_change(kept, record, now, retention)
        return record

    # --- commands -------------------------------------------------------------------

    def on_command(self, command: incident_pb2.IncidentCommand, now: float) -> Outcome:
        raw = self.incidents.get(command.incident_id)
        if raw is None:
            return Outcome(dropped="unknown_incident")
        incident = IncidentState.from_json(raw)
        kind = command.WhichOneof("command")
        if not incident.is_open and kind not in (
            "note",
            "timeline_entry",
            "status_update",
            "priority",
        ):
            return Outcome(dropped="incident_resolved")
        by = {"actor": command.actor, "command_id": command.command_id}
        if kind == "acknowledge":
            if incident.status == "acknowledged":
                return Outcome(dropped="already_acknowledged")
            incident.status = "acknowledged"
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
                None,
                now,
                f"acknowledged by {command.actor}",
                **by,
            )
        if kind == "unacknowledge":
            if incident.status != "acknowledged":
                return Outcome(dropped="not_acknowledged")
            incident.status = "triggered"
            incident.snoozed_until = None
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_UNACKNOWLEDGED,
                None,
                now,
                f"acknowledgement timed out ({command.actor or 'system'}): triggered again",
                **by,
            )
        if kind == "resolve":
            return self._resolve(incident, None, now, f"resolved by {command.actor}", **by)
        if kind == "note":
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_NOTE_ADDED,
                None,
                now,
                command.note.text,
                **by,
            )
        if kind == "priority":
            wanted = command.priority.priority
            if not wanted:
                return Outcome(dropped="priority_empty")
            if wanted == incident.priority:
                return Outcome(dropped="priority_unchanged")
            was = incident.priority
            incident.priority = wanted
            change = f"from {was} to {wanted}" if was else f"to {wanted}"
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_PRIORITY_CHANGED,
                None,
                now,
                f"priority changed {change} by {command.actor}",
                **by,
            )
        if kind == "status_update":
            update = command.status_update
            outcome = self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_STATUS_UPDATED,
                None,
                now,
                f"status update ({update.status}): {update.message}",
                **by,
            )
            outcome.events[0].status_update.CopyFrom(update)
            return outcome
        if kind == "set_impact":
            try:
                impact = parse_impact(command.set_impact.impact) or ""
            except ValueError:
                return Outcome(dropped="unknown_impact")
            if impact == incident.impact:
                return Outcome(dropped="impact_unchanged")
            incident.impact = impact
            text = (
                f"public impact set to {impact} by {command.actor}"
                if impact
                else f"public impact cleared by {command.actor}: it follows the urgency"
            )
            return self._emit(
                incident, incident_pb2.INCIDENT_EVENT_TYPE_IMPACT_CHANGED, None, now, text, **by
            )
        if kind == "timeline_entry":
            entry = command.timeline_entry
            if entry.type == incident_pb2.INCIDENT_EVENT_TYPE_RELEASED and (
                command.actor == SELF_ACTOR
            ):
                return self._release(incident, now, command)
            if entry.type in _RESERVED_TIMELINE_TYPES:
                return Outcome(dropped="timeline_entry_reserved_type")
            return self._emit(incident, int(entry.type), None, now, entry.message, **by)
        if kind == "reassign":
            target = command.reassign.escalation_policy_id or f"user:{command.reassign.user_id}"
            if command.reassign.escalation_policy_id:
                incident.escalation_policy_id = command.reassign.escalation_policy_id
            incident.assigned_user_id = command.reassign.user_id
            incident.status = "triggered"  # escalation starts over on the new assignee
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_REASSIGNED,
                None,
                now,
                f"reassigned to {target} by {command.actor}",
                **by,
            )
        if kind == "snooze":
            until = command.snooze.until.ToDatetime(tzinfo=UTC)
            incident.status = "acknowledged"  # as in PagerDuty: snoozing acknowledges
            incident.snoozed_until = until.timestamp()
            return self._emit(
                incident,
                incident_pb2.INCIDENT_EVENT_TYPE_SNOOZED,
                None,
                now,
                f"snoozed until {until.isoformat()} by {command.actor}",
                **by,
            )
        return Outcome(dropped=f"unsupported_command_{kind}")

    def _release(
        self, incident: IncidentState, now: float, command: incident_pb2.IncidentCommand
    ) -> Outcome:
        if not incident.held_by_incident_id:
            return Outcome(dropped="not_held")
        holder = incident.held_by_incident_id
        incident.held_by_incident_id = ""
        self.held.pop(incident.incident_id, None)
        return self._emit(
            incident,
            incident_pb2.INCIDENT_EVENT_TYPE_RELEASED,
            None,
            now,
            f"released: upstream incident {holder} resolved while this one is still open",
            actor=SELF_ACTOR,
            command_id=command.command_id,
        )

    def held_release_command(
        self, incident_id: str, entry: Mapping[str, Any]
    ) -> incident_pb2.IncidentCommand:
        """The command that releases a held incident once its holder has resolved (sent by
        the worker onto incidents.commands, keyed by the held incident's service)."""
        return incident_pb2.IncidentCommand(
            command_id=derived_id("release", incident_id, str(entry["holder"])),
            incident_id=incident_id,
            service_id=str(entry["service_id"]),
            actor=SELF_ACTOR,
            timeline_entry=incident_pb2.TimelineEntryCommand(
                type=incident_pb2.INCIDENT_EVENT_TYPE_RELEASED,
                message=f"upstream incident {entry['holder']} resolved",
            ),
        )

    # --- helpers --------------------------------------------------------------------

    def _resolve(
        self,
        incident: IncidentState,
        alert: alert_pb2.Alert | None,
        now: float,
        message: str,
        actor: str,
        command_id: str = "",
    ) -> Outcome:
        incident.status = "resolved"
        incident.resolved_at = now
        for key in incident.open_alert_keys:
            raw = self.alerts.get(key)
            if raw:
                state = AlertState.from_json(raw)
                state.status = AlertStatus.RESOLVED
                self.alerts[key] = state.to_json()
            self._forget_source(incident.service_id, key)
        incident.open_alert_keys = []
        for suffix in ("", "\x1fsuppressed"):
            slot = f"{incident.service_id}\x1f{incident.group_key}{suffix}"
            if self.groups.get(slot) == incident.incident_id:
                del self.groups[slot]
        if incident.held_by_incident_id:
            self.held.pop(incident.incident_id, None)
        return self._emit(
            incident,
            incident_pb2.INCIDENT_EVENT_TYPE_RESOLVED,
            alert,
            now,
            message,
            actor=actor,
            command_id=command_id,
        )

    def _emit(
        self,
        incident: IncidentState,
        event_type: int,
        alert: alert_pb2.Alert | None,
        now: float,
        message: str,
        *,
        actor: str = "",
        command_id: str = "",
    ) -> Outcome:
        incident.updated_at = now
        self.incidents[incident.incident_id] = incident.to_json()
        cause = alert.event_id if alert is not None else command_id
        # Field by field, as in write_proto: the incident is written into the event, not
        # made and then copied in.
        event = incident_pb2.IncidentEvent()
        event.event_id = derived_id(cause, incident.incident_id, str(event_type))
        event.type = event_type  # type: ignore[assignment]
        incident.write_proto(event.incident)
        event.actor = actor or ("source" if alert is not None else "system")
        event.message = message
        if command_id:
            event.command_id = command_id
        if alert is not None:
            event.alert.CopyFrom(alert)
        _set_epoch(event.at, now)
        return Outcome(events=[event])
