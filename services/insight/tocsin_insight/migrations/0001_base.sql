-- insight's own bookkeeping: which fact-table generations exist and which one serves,
-- and the records no generation could decode (dead letters, kept with their bytes).

CREATE TABLE insight_generations (
    name          text PRIMARY KEY,             -- 'g1', 'g2', ...; its tables live in schema insight_<name>
    definition    integer NOT NULL,             -- the fact definitions' version that fills it
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,                  -- caught up with the topics' ends seen at its start
    CHECK (name ~ '^g[0-9]+$')
);

CREATE TABLE insight_serving (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    generation text NOT NULL REFERENCES insight_generations (name),
    since      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE insight_dead_letters (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    key         bytea,
    value       bytea,
    headers     jsonb NOT NULL DEFAULT '{}'::jsonb,
    reason      text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
