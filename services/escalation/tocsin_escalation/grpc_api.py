"""gRPC servicers of escalation: IncidentService and OnCallService (thin adapters)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from tocsin.v1 import (
    incident_pb2,
    incident_service_pb2,
    incident_service_pb2_grpc,
    oncall_service_pb2,
    oncall_service_pb2_grpc,
)
from tocsin_common.auth.access import AccessControl
from tocsin_common.auth.directory import (
    contact_resource,
    incident_resource,
    policy_resource,
    schedule_resource,
)
from tocsin_common.auth.policy import Resource
from tocsin_common.commands import incident_command, send_command
from tocsin_common.config import ConfigStore, Schedule, TocsinConfig
from tocsin_common.kafka import EventProducer
from tocsin_common.limits import note_problem, snooze_problem
from tocsin_common.priority import known_priorities, priority_problem
from tocsin_common.statuspage.components import parse_impact
from tocsin_common.statuspage.events import updates_of
from tocsin_common.statuspage.updates import UpdateError, post_update
from tocsin_common.timeutil import from_timestamp, set_timestamp

from tocsin_escalation.incident_query import (
    BadRequest,
    Filters,
    decode_cursor,
    encode_cursor,
    filters_of,
    parse_position,
    plan,
    wanted,
)
from tocsin_escalation.projection import IncidentProjection, PositionLost
from tocsin_escalation.schedule import (
    OverrideSpan,
    RangeTooLong,
    Span,
    ical,
    overrides_in,
    render,
    render_layers,
    who_is_on_call,
)
from tocsin_escalation.stores import OverlapError, OverrideStore

# The most incidents the status page is built from (open ones, and ones with updates).
STATUS_PAGE_MAX_INCIDENTS = 500
OPEN_STATUSES = (incident_pb2.INCIDENT_STATUS_TRIGGERED, incident_pb2.INCIDENT_STATUS_ACKNOWLEDGED)


class IncidentServicer(incident_service_pb2_grpc.IncidentServiceServicer):
    """Reads from the projection; changes go through incidents.commands."""

    def __init__(
        self,
        projection: IncidentProjection,
        producer: EventProducer,
        config: ConfigStore,
        access: AccessControl,
    ) -> None:
        self._projection = projection
        self._producer = producer
        self._config = config
        self._access = access

    async def _incident(
        self, incident_id: str, context: grpc.aio.ServicerContext, action: str = "incident.read"
    ) -> incident_pb2.Incident:
        """The incident, once the caller may do ``action`` on it. An unknown incident and one
        the caller may not read answer alike (NOT_FOUND), so ids cannot be probed."""
        if not incident_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "incident_id: is required")
        incident = await self._projection.get(incident_id)
        resource = incident_resource(
            self._config.current, incident_id, incident.service_id if incident else ""
        )
        if incident is None or not self._access.allows("incident.read", resource):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"incident_id: no incident {incident_id!r}"
            )
        assert incident is not None
        await self._access.authorize(context, action, resource)
        return incident

    async def _command(
        self, incident_id: str, action: str, context: grpc.aio.ServicerContext, **kind: object
    ) -> incident_service_pb2.CommandAccepted:
        incident = await self._incident(incident_id, context, action)
        principal = self._access.principal()
        command = incident_command(
            incident_id,
            incident.service_id,
            principal.id,  # never a field the client fills in
            datetime.now(UTC),
            **kind,
        )
        await send_command(self._producer, command)
        return incident_service_pb2.CommandAccepted(command_id=command.command_id)

    async def Acknowledge(
        self,
        request: incident_service_pb2.IncidentRef,
        context: grpc.aio.ServicerContext,
    ) -> incident_service_pb2.CommandAccepted:
        return await self._command(
            request.incident_id,
            "incident.acknowledge",
            context,
            acknowledge=incident_pb2.AcknowledgeCommand(),
        )

    async def Resolve(
        self,
        request: incident_service_pb2.IncidentRef,
        context: grpc.aio.ServicerContext,
    ) -> incident_service_pb2.CommandAccepted:
        return await self._command(
            request.incident_id, "incident.resolve", context, resolve=incident_pb2.ResolveCommand()
        )

    async def AddNote(
        self,
        request: incident_service_pb2.AddNoteRequest,
        context: grpc.aio.ServicerContext,
    ) -> incident_service_pb2.CommandAccepted:
        if not request.text.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text: must not be empty")
        if too_big := note_problem(self._config.current.limits, request.text):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, too_big)
        return await self._command(
            request.incident_id,
            "incident.note",
            context,
            note=incident_pb2.NoteCommand(text=request.text),
        )

    async def SetPriority(
        self,
        request: incident_service_pb2.SetPriorityRequest,
        context: grpc.aio.ServicerContext,
    ) -> incident_service_pb2.CommandAccepted:
        priorities = self._config.current.insight.priorities
        problem = priority_problem(request.priority, known_priorities([p.id for p in priorities]))
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        return await self._command(
            request.incident_id,
            "incident.priority",
            context,
            priority=incident_pb2.PriorityCommand(priority=request.priority),
        )

    async def PostStatusUpdate(
        self,
        request: incident_service_pb2.PostStatusUpdateRequest,
        context: grpc.aio.ServicerContext,
    ) -> incident_service_pb2.PostStatusUpdateResponse:
        page = self._config.current.status_page
        if not page.enabled:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "status_page: the status page is not enabled in the config",
            )
        incident = await self._incident(request.incident_id, context, "incident.status_update")
        previous = updates_of(await self._projection.timeline(request.incident_id))
        principal = self._access.principal()
        now = datetime.now(UTC)
        try:
            update, cleaned = post_update(
                previous,
                incident_id=request.incident_id,
                status=request.status,
                message=request.message,
                posted_by=principal.id,
                now=now,
                max_chars=page.message_max_chars,
                public_title=request.public_title,
            )
        except UpdateError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError("unreachable") from None
        posted = incident_pb2.PublicStatusUpdate(
            status=update.status, message=update.message, public_title=update.public_title
        )
        command = incident_command(
            request.incident_id, incident.service_id, principal.id, now, status_update=posted
        )
        await send_command(self._producer, command)
        return incident_service_pb2.PostStatusUpdateResponse(
            command_id=command.command_id, update=posted, redactions=list(cleaned.redactions)
        )

    async def SetImpact(
        self,
        request: incident_service_pb2.SetImpactRequest,
        context: grpc.aio.ServicerContext,
    ) -> incident_service_pb2.CommandAccepted:
        """The incident's public impact set by a responder ("" clears it: it follows the
        urgency again); correlation applies it as an IMPACT_CHANGED event."""
        if not self._config.current.status_page.enabled:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "status_page: the status page is not enabled in the config",
            )
        try:
            impact = parse_impact(request.impact)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError("unreachable") from None
        return await self._command(
            request.incident_id,
            "incident.set_impact",
            context,
            set_impact=incident_pb2.SetImpactCommand(impact=impact or ""),
        )

    async def StatusPage(
        self,
        request: incident_service_pb2.StatusPageRequest,
        context: grpc.aio.ServicerContext,
    ) -> incident_service_pb2.StatusPageResponse:
        await self._access.authorize(context, "status_page.read", Resource("status_page"))
        since = (
            request.since.ToNanoseconds() / 1e9
            if request.HasField("since")
            else time.time() - 7 * 24 * 3600
        )
        open_query = plan(
            Filters(statuses=frozenset(OPEN_STATUSES)), {}, lambda _: True, reads_everything=True
        )
        found = await self._projection.page(open_query, STATUS_PAGE_MAX_INCIDENTS, None)
        reply = incident_service_pb2.StatusPageResponse(open=found.incidents)
        for incident_id in await self._projection.status_updated_since(
            since, STATUS_PAGE_MAX_INCIDENTS
        ):
            incident = await self._projection.get(incident_id)
            if incident is None:
                continue  # expired with the resolved incident's retention
            events = await self._projection.timeline(incident_id)
            reply.updated.add(
                incident=incident,
                updates=[
                    e for e in events if e.type == incident_pb2.INCIDENT_EVENT_TYPE_STATUS_UPDATED
                ],
            )
        return reply

    async def Reassign(
        self, request: incident_service_pb2.ReassignRequest, context: grpc.aio.ServicerContext
    ) -> incident_service_pb2.CommandAccepted:
        if bool(request.escalation_policy_id) == bool(request.user_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "escalation_policy_id, user_id: give exactly one of them",
            )
        config = self._config.current
        try:
            if request.escalation_policy_id:
                config.policy(request.escalation_policy_id)
            else:
                config.user(request.user_id)
        except KeyError as e:
            field = "escalation_policy_id" if request.escalation_policy_id else "user_id"
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{field}: {e.args[0]}")
        return await self._command(
            request.incident_id,
            "incident.reassign",
            context,
            reassign=incident_pb2.ReassignCommand(
                escalation_policy_id=request.escalation_policy_id, user_id=request.user_id
            ),
        )

    async def Snooze(
        self, request: incident_service_pb2.SnoozeRequest, context: grpc.aio.ServicerContext
    ) -> incident_service_pb2.CommandAccepted:
        if not request.HasField("until") or from_timestamp(request.until) <= datetime.now(UTC):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "until: must be in the future")
        limits = self._config.current.limits
        if too_far := snooze_problem(limits, from_timestamp(request.until), datetime.now(UTC)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, too_far)
        return await self._command(
            request.incident_id,
            "incident.snooze",
            context,
            snooze=incident_pb2.SnoozeCommand(until=request.until),
        )

    async def Watch(
        self, request: incident_service_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[incident_service_pb2.WatchEvent]:
        after: str | None = None
        if request.from_position:
            try:
                parse_position(request.from_position)
            except BadRequest as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            after = request.from_position
        principal = self._access.principal()
        checked = time.monotonic()
        try:
            async for position, event in self._projection.watch(after):
                if not wanted(request.service_ids, event.incident.service_id, self._reads_service):
                    continue
                # A revoked or expired token ends the stream at the next event (within a
                # second of a revocation): a Watch must not outlive its credential.
                if time.monotonic() - checked >= WATCH_RECHECK_S:
                    if not await self._access.still_valid(principal):
                        await context.abort(
                            grpc.StatusCode.UNAUTHENTICATED, "the token was revoked or expired"
                        )
                    checked = time.monotonic()
                yield incident_service_pb2.WatchEvent(event=event, position=position)
        except PositionLost:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"from_position: {request.from_position} is older than the events kept "
                "(limits.watch_backlog); List again and Watch from its watch_position",
            )

    def _reads_service(self, service_id: str) -> bool:
        """Whether the caller may read the incidents of ``service_id`` (an incident's
        readability is its service's team's: see incident_resource)."""
        return self._access.allows(
            "incident.read", incident_resource(self._config.current, "", service_id)
        )

    async def Get(
        self,
        request: incident_service_pb2.GetIncidentRequest,
        context: grpc.aio.ServicerContext,
    ) -> incident_pb2.Incident:
        return await self._incident(request.incident_id, context)

    async def List(
        self,
        request: incident_service_pb2.ListIncidentsRequest,
        context: grpc.aio.ServicerContext,
    ) -> incident_service_pb2.ListIncidentsResponse:
        limit = request.limit or 100
        if limit < 0 or limit > 1000:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "limit: must be between 1 and 1000"
            )
        try:
            filters = filters_of(request)
            after = decode_cursor(request.page_token, filters) if request.page_token else None
        except BadRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError("unreachable") from None
        config = self._config.current
        # What the caller may read is a filter of the index query like the others, so a
        # page is cut from readable incidents only and never comes back short.
        query = plan(
            filters,
            {service.id: service.team or "" for service in config.services},
            self._reads_service,
            reads_everything=self._reads_service(""),  # even a service the config lost
        )
        if query.empty:
            return incident_service_pb2.ListIncidentsResponse(
                watch_position=await self._projection.position()
            )
        page = await self._projection.page(query, limit, after)
        return incident_service_pb2.ListIncidentsResponse(
            incidents=page.incidents,
            next_page_token=encode_cursor(page.next_cursor, filters) if page.next_cursor else "",
            watch_position=page.watch_position,
        )

    async def Timeline(
        self,
        request: incident_service_pb2.TimelineRequest,
        context: grpc.aio.ServicerContext,
    ) -> incident_service_pb2.TimelineResponse:
        await self._incident(request.incident_id, context)
        return incident_service_pb2.TimelineResponse(
            events=await self._projection.timeline(request.incident_id)
        )


def _add_spans(
    into: RepeatedCompositeFieldContainer[oncall_service_pb2.ScheduleSpan], spans: list[Span]
) -> None:
    for span in spans:
        out = into.add(user_ids=list(span.user_ids))
        set_timestamp(out.start, span.start)
        set_timestamp(out.end, span.end)


class OnCallServicer(oncall_service_pb2_grpc.OnCallServiceServicer):
    """Who is on call, rendered schedules (with iCal), runtime overrides, contact look-ups."""

    MAX_RANGE = timedelta(days=366)

    def __init__(
        self, config: ConfigStore, overrides: OverrideStore, access: AccessControl
    ) -> None:
        self._config = config
        self._overrides = overrides
        self._access = access

    async def _schedule(
        self,
        schedule_id: str,
        context: grpc.aio.ServicerContext,
        field: str = "schedule_id",
        read: bool = True,
    ) -> Schedule:
        """The schedule, once the caller may read it (``read``)."""
        if not schedule_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: is required")
        try:
            schedule = self._config.current.schedule(schedule_id)
        except KeyError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{field}: no schedule {schedule_id!r}")
            raise AssertionError("unreachable") from None
        if read:
            await self._access.authorize(
                context, "schedule.read", schedule_resource(self._config.current, schedule_id)
            )
        return schedule

    async def _span_at(self, schedule: Schedule, at: datetime) -> Span | None:
        runtime = await self._overrides.list(schedule.id)
        spans = render(schedule, at - timedelta(days=7), at + timedelta(days=7), runtime)
        return next((s for s in spans if s.start <= at < s.end), None)

    async def WhoIsOnCall(
        self,
        request: oncall_service_pb2.WhoIsOnCallRequest,
        context: grpc.aio.ServicerContext,
    ) -> oncall_service_pb2.WhoIsOnCallResponse:
        config = self._config.current
        at = from_timestamp(request.at) if request.HasField("at") else datetime.now(UTC)
        response = oncall_service_pb2.WhoIsOnCallResponse()
        target = request.WhichOneof("target")
        if target == "schedule_id":
            schedule = await self._schedule(request.schedule_id, context)
            span = await self._span_at(schedule, at)
            for user in span.user_ids if span is not None else ():
                entry = response.entries.add(user_id=user, schedule_id=schedule.id)
                assert span is not None
                set_timestamp(entry.start, span.start)
                set_timestamp(entry.end, span.end)
            return response
        if target == "escalation_policy_id":
            try:
                policy = config.policy(request.escalation_policy_id)
            except KeyError:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"escalation_policy_id: no policy {request.escalation_policy_id!r}",
                )
            await self._access.authorize(context, "oncall.read", policy_resource(config, policy.id))
            for level, step in enumerate(policy.levels, start=1):
                for t in step.targets:
                    if t.type == "schedule":
                        schedule = config.schedule(t.id)
                        runtime = await self._overrides.list(t.id)
                        users = who_is_on_call(schedule, at, runtime)
                    elif t.type == "user":
                        users = [t.id]
                    else:
                        users = list(config.team(t.id).members)
                    for user in users:
                        response.entries.add(
                            user_id=user,
                            escalation_level=level,
                            schedule_id=t.id if t.type == "schedule" else "",
                        )
            return response
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "target: one of schedule_id or escalation_policy_id is required",
        )
        raise AssertionError("unreachable")

    async def RenderSchedule(
        self, request: oncall_service_pb2.RenderScheduleRequest, context: grpc.aio.ServicerContext
    ) -> oncall_service_pb2.RenderScheduleResponse:
        schedule = await self._schedule(request.schedule_id, context)
        if not request.HasField("since"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "since: is required")
        if not request.HasField("until"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "until: is required")
        since, until = from_timestamp(request.since), from_timestamp(request.until)
        if until <= since:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "until: must be after since")
        if until - since > self.MAX_RANGE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "until: the range may be at most 366 days"
            )
        runtime = await self._overrides.list(schedule.id)
        try:
            spans = render(schedule, since, until, runtime)
        except RangeTooLong as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"until: {e}")
        config = self._config.current
        names = {u.id: u.name for u in config.users}
        response = oncall_service_pb2.RenderScheduleResponse(
            ical=ical(schedule, spans, datetime.now(UTC), names)
        )
        _add_spans(response.spans, spans)
        for layer, layer_spans in zip(
            schedule.layers, render_layers(schedule, since, until), strict=True
        ):
            _add_spans(response.layers.add(name=layer.name).spans, layer_spans)
        for o, fixed in overrides_in(schedule, since, until, runtime):
            out = response.overrides.add(
                override_id=o.override_id,
                schedule_id=schedule.id,
                user_id=o.user_id,
                created_by=o.created_by,
                from_config=fixed,
            )
            set_timestamp(out.start, o.start)
            set_timestamp(out.end, o.end)
        return response

    async def CreateOverride(
        self, request: oncall_service_pb2.CreateOverrideRequest, context: grpc.aio.ServicerContext
    ) -> oncall_service_pb2.Override:
        if not request.HasField("override"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "override: is required")
        o = request.override
        schedule = await self._schedule(o.schedule_id, context, "override.schedule_id", read=False)
        if not o.user_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "override.user_id: is required")
        try:
            self._config.current.user(o.user_id)
        except KeyError:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"override.user_id: no user {o.user_id!r}"
            )
        principal = await self._access.authorize(
            context,
            "override.create",
            schedule_resource(
                self._config.current,
                schedule.id,
                kind="override",
                owner=o.user_id,
                ident=f"{schedule.id}/{o.override_id or 'new'}",
            ),
        )
        for name in ("start", "end"):
            if not o.HasField(name):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"override.{name}: is required"
                )
        start, end = from_timestamp(o.start), from_timestamp(o.end)
        if end <= start:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "override.end: must be after override.start"
            )
        override_id = o.override_id or str(uuid.uuid4())
        span = OverrideSpan(o.user_id, start, end, override_id, principal.id)
        fixed = [
            OverrideSpan(f.user, f.start, f.end, f"config:{i}")
            for i, f in enumerate(schedule.overrides)
        ]
        try:
            await self._overrides.create(schedule.id, span, fixed)
        except OverlapError as e:
            other = e.other
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"override.start: overlaps override {other.override_id!r} of user "
                f"{other.user_id!r} ({other.start.isoformat()} to {other.end.isoformat()})",
            )
        result = oncall_service_pb2.Override(
            override_id=override_id,
            schedule_id=schedule.id,
            user_id=o.user_id,
            created_by=principal.id,
        )
        result.start.CopyFrom(o.start)
        result.end.CopyFrom(o.end)
        return result

    async def DeleteOverride(
        self, request: oncall_service_pb2.DeleteOverrideRequest, context: grpc.aio.ServicerContext
    ) -> oncall_service_pb2.DeleteOverrideResponse:
        schedule = await self._schedule(request.schedule_id, context, read=False)
        if not request.override_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "override_id: is required")
        existing = await self._overrides.get(schedule.id, request.override_id)
        await self._access.authorize(
            context,
            "override.delete",
            schedule_resource(
                self._config.current,
                schedule.id,
                kind="override",
                owner=existing.user_id if existing else "",
                ident=f"{schedule.id}/{request.override_id}",
            ),
        )
        if existing is None or not await self._overrides.delete(schedule.id, request.override_id):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"override_id: schedule {schedule.id!r} has no runtime override "
                f"{request.override_id!r}",
            )
        return oncall_service_pb2.DeleteOverrideResponse()

    async def GetContactMethod(
        self,
        request: oncall_service_pb2.GetContactMethodRequest,
        context: grpc.aio.ServicerContext,
    ) -> oncall_service_pb2.ContactMethod:
        config = self._config.current
        await self._access.authorize(
            context,
            "contact.read",
            contact_resource(config, request.user_id, request.contact_method_id),
        )
        found = contact_method(config, request.user_id, request.contact_method_id)
        if isinstance(found, LookupFailure):
            await context.abort(found.code, found.message)
            raise AssertionError("unreachable")
        return found

    async def GetContactMethods(
        self,
        request: oncall_service_pb2.GetContactMethodsRequest,
        context: grpc.aio.ServicerContext,
    ) -> oncall_service_pb2.GetContactMethodsResponse:
        """Many look-ups against one config snapshot; a look-up that fails fails alone."""
        if len(request.lookups) > MAX_CONTACT_LOOKUPS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"lookups: at most {MAX_CONTACT_LOOKUPS} per call, got {len(request.lookups)}",
            )
        config = self._config.current
        results = []
        for lookup in request.lookups:
            resource = contact_resource(config, lookup.user_id, lookup.contact_method_id)
            if not self._access.allows("contact.read", resource):
                # Denied alone, and audited, without failing the other look-ups.
                await self._access.check(context, "contact.read", resource)
                results.append(
                    oncall_service_pb2.ContactMethodResult(
                        error=oncall_service_pb2.ContactLookupError(
                            code=grpc.StatusCode.PERMISSION_DENIED.value[0],
                            message=f"contact.read of {resource.id!r} denied",
                        )
                    )
                )
                continue
            found = contact_method(config, lookup.user_id, lookup.contact_method_id)
            if isinstance(found, LookupFailure):
                results.append(
                    oncall_service_pb2.ContactMethodResult(
                        error=oncall_service_pb2.ContactLookupError(
                            code=found.code.value[0], message=found.message
                        )
                    )
                )
            else:
                results.append(oncall_service_pb2.ContactMethodResult(contact_method=found))
        return oncall_service_pb2.GetContactMethodsResponse(results=results)


MAX_CONTACT_LOOKUPS = 1000  # per GetContactMethods call
WATCH_RECHECK_S = 1.0  # how often a Watch checks that its token is still live


@dataclass(frozen=True)
class LookupFailure:
    code: grpc.StatusCode
    message: str


def contact_method(
    config: TocsinConfig, user_id: str, contact_method_id: str
) -> oncall_service_pb2.ContactMethod | LookupFailure:
    """A user's contact method as notification needs it, or why there is none (pure)."""
    if not user_id:
        return LookupFailure(grpc.StatusCode.INVALID_ARGUMENT, "user_id: is required")
    if not contact_method_id:
        return LookupFailure(grpc.StatusCode.INVALID_ARGUMENT, "contact_method_id: is required")
    try:
        user = config.user(user_id)
    except KeyError:
        return LookupFailure(grpc.StatusCode.NOT_FOUND, f"user_id: no user {user_id!r}")
    try:
        method = config.contact_method(user_id, contact_method_id)
    except KeyError:
        return LookupFailure(
            grpc.StatusCode.NOT_FOUND,
            f"contact_method_id: user {user_id!r} has no contact method {contact_method_id!r}",
        )
    return oncall_service_pb2.ContactMethod(
        user_id=user.id,
        contact_method_id=method.id,
        type=method.type,
        address=method.address,
        user_name=user.name,
        time_zone=user.time_zone,
        unsigned=method.unsigned,
    )
