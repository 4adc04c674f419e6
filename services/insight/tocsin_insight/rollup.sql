-- Part of every generation (schema.generation_ddl), and added alone to a generation made
-- before it existed (rollup.ensure): never the rest of generation.sql over an older
-- generation, whose tables may have other columns.
-- The report's rollup: one row per (UTC day of creation, service, team, urgency, priority,
-- first acknowledger) with the sums a Report needs and, per duration, the incidents' values
-- sorted (percentiles stay exact: a report merges the values of its days). Kept current in
-- the transaction that writes the facts (store.py recomputes the (service, day) slices a
-- batch touched), rebuilt whole by a replay before its generation serves; a function of
-- incident_facts and incident_notifications only, so it can always be rebuilt from them.
CREATE TABLE IF NOT EXISTS {schema}.incident_rollup (
    day                 date NOT NULL,
    service_id          text NOT NULL,
    team_id             text NOT NULL,
    urgency             text NOT NULL,
    priority            text NOT NULL,
    first_ack_by        text NOT NULL,
    incidents           integer NOT NULL CHECK (incidents > 0),
    escalated           integer NOT NULL,
    resolved            integer NOT NULL,
    auto_resolved       integer NOT NULL,
    alerts              bigint NOT NULL,
    suppressed_alerts   bigint NOT NULL,
    notifications       bigint NOT NULL,
    escalations         bigint NOT NULL,
    reassignments       bigint NOT NULL,
    snoozed_seconds     numeric NOT NULL,
    seconds_to_first_ack float8[] NOT NULL,
    seconds_to_resolve   float8[] NOT NULL,
    seconds_to_engage    float8[] NOT NULL,
    seconds_to_mobilize  float8[] NOT NULL,
    PRIMARY KEY (day, service_id, team_id, urgency, priority, first_ack_by)
);
