-- The tables of one generation of facts (schema {schema}); created whole, filled by
-- replaying the topics from their beginning. Constraints live here, not only in code.

CREATE SCHEMA IF NOT EXISTS {schema};

-- Where this generation's consumer is: the next offset to read, written in the same
-- transaction as the rows those records produced (exactly once from Kafka to Postgres).
CREATE TABLE IF NOT EXISTS {schema}.offsets (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (topic, partition)
);

-- The end offsets seen when this generation started: reaching them all completes it.
CREATE TABLE IF NOT EXISTS {schema}.targets (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    end_offset  bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Every incident event once (by its id): the timeline of the review draft, and what makes
-- a replayed or re-delivered event change nothing.
CREATE TABLE IF NOT EXISTS {schema}.incident_events (
    event_id    text PRIMARY KEY,
    incident_id text NOT NULL,
    type        text NOT NULL,
    at          timestamptz NOT NULL,
    actor       text NOT NULL DEFAULT '',
    message     text NOT NULL DEFAULT '',
    alert_summary text NOT NULL DEFAULT '',
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_events_incident ON {schema}.incident_events (incident_id, at);

CREATE TABLE IF NOT EXISTS {schema}.incident_facts (
    incident_id        text PRIMARY KEY,
    service_id         text NOT NULL,
    team_id            text NOT NULL DEFAULT '',
    title              text NOT NULL DEFAULT '',
    urgency            text NOT NULL,
    severity           text NOT NULL,
    priority           text NOT NULL,
    group_key          text NOT NULL DEFAULT '',
    dedup_key          text NOT NULL DEFAULT '',
    source             text NOT NULL DEFAULT '',
    status             text NOT NULL,
    created_at         timestamptz NOT NULL,
    first_ack_at       timestamptz,
    first_ack_by       text NOT NULL DEFAULT '',
    first_engaged_at   timestamptz,
    last_engaged_at    timestamptz,
    engaged_users      text[] NOT NULL DEFAULT ARRAY[]::text[],
    resolved_at        timestamptz,
    resolved_by        text NOT NULL DEFAULT '',
    auto_resolved      boolean NOT NULL DEFAULT false,
    escalation_count   integer NOT NULL DEFAULT 0 CHECK (escalation_count >= 0),
    max_level          integer NOT NULL DEFAULT 0 CHECK (max_level >= 0),
    reassignments      integer NOT NULL DEFAULT 0 CHECK (reassignments >= 0),
    snoozed_seconds    double precision NOT NULL DEFAULT 0 CHECK (snoozed_seconds >= 0),
    snoozed_since      timestamptz,
    snoozed_until      timestamptz,
    alert_count        integer NOT NULL DEFAULT 0 CHECK (alert_count >= 0),
    suppressed_alerts  integer NOT NULL DEFAULT 0 CHECK (suppressed_alerts >= 0),
    suppressed         boolean NOT NULL DEFAULT false,
    suppression_kind   text NOT NULL DEFAULT '',
    held               boolean NOT NULL DEFAULT false,
    flapping           boolean NOT NULL DEFAULT false,
    linked_changes     text[] NOT NULL DEFAULT ARRAY[]::text[],
    impact             text NOT NULL DEFAULT '',
    impact_start       timestamptz,
    impact_end         timestamptz,
    event_count        integer NOT NULL DEFAULT 0,
    -- the opening alert's labels, capped (facts.capped_labels): definitions version 4 on
    labels             jsonb NOT NULL DEFAULT '{{}}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
    updated_at         timestamptz NOT NULL,
    -- The incident's measures (docs/insight.md#response), computed once when the row is
    -- written: reports aggregate plain columns. NULL while they have no value.
    seconds_to_first_ack double precision GENERATED ALWAYS AS (
        CASE WHEN first_ack_at IS NOT NULL
             THEN greatest(0, extract(epoch FROM first_ack_at - created_at))::float8 END
    ) STORED,
    seconds_to_resolve double precision GENERATED ALWAYS AS (
        CASE WHEN resolved_at IS NOT NULL
             THEN greatest(0, extract(epoch FROM resolved_at - created_at))::float8 END
    ) STORED,
    seconds_to_engage double precision GENERATED ALWAYS AS (
        CASE WHEN cardinality(engaged_users) >= 2
             THEN greatest(0, extract(epoch FROM last_engaged_at - first_engaged_at))::float8 END
    ) STORED,
    seconds_to_mobilize double precision GENERATED ALWAYS AS (
        CASE WHEN cardinality(engaged_users) >= 2
             THEN greatest(0, extract(epoch FROM last_engaged_at - created_at))::float8 END
    ) STORED,
    CHECK (resolved_at IS NULL OR resolved_at >= created_at - interval '1 minute')
);
CREATE INDEX IF NOT EXISTS incident_facts_created ON {schema}.incident_facts (created_at);
CREATE INDEX IF NOT EXISTS incident_facts_service ON {schema}.incident_facts (service_id, created_at);
CREATE INDEX IF NOT EXISTS incident_facts_team ON {schema}.incident_facts (team_id, created_at);
-- The deploy gate's open incidents of a service and its dependencies.
CREATE INDEX IF NOT EXISTS incident_facts_open ON {schema}.incident_facts (service_id)
    WHERE status <> 'resolved';

-- One row per delivery outcome of a page (request, attempt, outcome).
CREATE TABLE IF NOT EXISTS {schema}.notification_facts (
    request_id   text NOT NULL,
    attempt      integer NOT NULL,
    outcome      text NOT NULL,
    incident_id  text NOT NULL,
    user_id      text NOT NULL,
    contact_method_id text NOT NULL DEFAULT '',
    channel      text NOT NULL DEFAULT '',
    at           timestamptz NOT NULL,
    time_zone    text NOT NULL DEFAULT 'UTC',   -- the person's zone when it was recorded
    local_at     timestamp NOT NULL,            -- wall-clock time in that zone
    hour_class   text NOT NULL DEFAULT '',      -- business | off | sleep (filled by the domain rule)
    PRIMARY KEY (request_id, attempt, outcome)
);
CREATE INDEX IF NOT EXISTS notification_facts_user ON {schema}.notification_facts (user_id, at);
CREATE INDEX IF NOT EXISTS notification_facts_incident ON {schema}.notification_facts (incident_id);

-- Pages delivered per incident (kept apart from the incident row: the two topics are not
-- ordered with each other, a page can be recorded before its incident's first event).
CREATE TABLE IF NOT EXISTS {schema}.incident_notifications (
    incident_id  text PRIMARY KEY,
    delivered    integer NOT NULL DEFAULT 0,
    users        text[] NOT NULL DEFAULT ARRAY[]::text[]
);

CREATE TABLE IF NOT EXISTS {schema}.change_facts (
    event_id     text PRIMARY KEY,
    service_id   text NOT NULL,
    team_id      text NOT NULL DEFAULT '',
    summary      text NOT NULL DEFAULT '',
    source       text NOT NULL DEFAULT '',
    at           timestamptz NOT NULL,
    received_at  timestamptz,
    change_id    text NOT NULL DEFAULT '',
    kind         text NOT NULL DEFAULT 'unspecified',
    status       text NOT NULL DEFAULT 'unspecified',
    version      text NOT NULL DEFAULT '',
    environment  text NOT NULL DEFAULT '',
    rollback_of  text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS change_facts_service ON {schema}.change_facts (service_id, at);
CREATE INDEX IF NOT EXISTS change_facts_change ON {schema}.change_facts (change_id) WHERE change_id <> '';
