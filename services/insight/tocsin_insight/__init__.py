"""insight: the analytical read model of Tocsin. Consumes incidents.events,
notifications.status and changes into PostgreSQL exactly once (rows and offsets in one
transaction) and answers KPI, SLA and trend questions over gRPC (InsightService)."""
