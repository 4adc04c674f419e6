"""Automation on incidents: which rules fire, idempotency keys, approvals, dry runs (pure)."""
