"""Operations on a deployment, one module per runbook: database init, password rotation, preflight, health checks."""
