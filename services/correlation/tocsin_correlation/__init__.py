"""correlation: turns the alert stream into few, meaningful incidents (dedup, grouping,
and later silences, inhibition, dependencies, flapping, change correlation)."""
