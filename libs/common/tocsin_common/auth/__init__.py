"""Identity and access (docs/security.md): principals and roles, the decision function,
API tokens, service credentials, the gRPC interceptor, audit."""
