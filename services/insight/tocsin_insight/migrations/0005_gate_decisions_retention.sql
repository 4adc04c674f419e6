-- The deploy gate's decisions are kept change_control.decision_retention (docs/change-control.md):
-- every insight replica deletes, now and then, those evaluated before it, oldest first by
-- this index.
CREATE INDEX gate_decisions_evaluated ON gate_decisions (evaluated_at);
