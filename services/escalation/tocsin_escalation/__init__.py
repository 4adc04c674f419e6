"""escalation: decides who is paged for an incident and when (escalation policies,
on-call schedules, notification rules), and serves the incident and on-call APIs."""
