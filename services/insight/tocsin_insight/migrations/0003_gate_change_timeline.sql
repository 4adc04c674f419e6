-- A change's timeline (docs/change-control.md#a-changes-timeline): every decision about a
-- change (one asked with a change id), not only failed and warned ones, with who asked and
-- what it said; an override names the change of the decision it overrode.
ALTER TABLE gate_decisions ADD COLUMN actor text NOT NULL DEFAULT '';
ALTER TABLE gate_decisions ADD COLUMN outcome text NOT NULL DEFAULT '';
ALTER TABLE gate_decisions ADD COLUMN reason text NOT NULL DEFAULT '';
CREATE INDEX gate_decisions_change ON gate_decisions (change_id, evaluated_at)
    WHERE change_id <> '';

ALTER TABLE gate_overrides ADD COLUMN change_id text NOT NULL DEFAULT '';
CREATE INDEX gate_overrides_change ON gate_overrides (change_id) WHERE change_id <> '';
