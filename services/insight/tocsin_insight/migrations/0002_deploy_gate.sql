-- The deploy gate's runtime state, shared by every insight replica (not per generation:
-- it is not derived from the topics). See docs/change-control.md.

CREATE TABLE gate_freezes (
    freeze_id     text PRIMARY KEY,
    start_at      timestamptz NOT NULL,
    end_at        timestamptz NOT NULL,
    author        text NOT NULL,
    reason        text NOT NULL,
    services      text[] NOT NULL DEFAULT ARRAY[]::text[],
    environments  text[] NOT NULL DEFAULT ARRAY[]::text[],
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (end_at > start_at)
);
CREATE INDEX gate_freezes_end ON gate_freezes (end_at);

-- Decisions that failed or warned (what an override by evaluation id refers to).
CREATE TABLE gate_decisions (
    evaluation_id     text PRIMARY KEY,
    service           text NOT NULL,
    environment       text NOT NULL,
    version           text NOT NULL,
    change_id         text NOT NULL,
    evaluated_outcome text NOT NULL,
    dry_run           boolean NOT NULL,
    evaluated_at      timestamptz NOT NULL
);

CREATE TABLE gate_overrides (
    evaluation_id      text PRIMARY KEY,
    service            text NOT NULL,
    environment        text NOT NULL,
    version            text NOT NULL,
    actor              text NOT NULL,
    reason             text NOT NULL,
    created_at         timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    overridden_outcome text NOT NULL
);
CREATE INDEX gate_overrides_target ON gate_overrides (service, environment, version, expires_at);
