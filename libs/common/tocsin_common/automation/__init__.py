"""Automation on incidents: which rules fire, idempotency keys, approvals, dry runs (pure)."""

# The channel of an automation action's NotificationStatus (notification runs the action;
# insight leaves these out of its paging facts: nobody was paged).
CHANNEL = "automation"
