"""alert-ingest: the front door. Accepts events over HTTP (PagerDuty Events v2,
Alertmanager, Grafana), gRPC and Kafka, authenticates them by integration key, and makes
each one a durable, normalized protobuf Alert on Kafka before it answers."""
