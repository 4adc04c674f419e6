"""Pure KPI logic of insight: no I/O, time passed in. The edges (store, consumer, gRPC)
call into it."""
