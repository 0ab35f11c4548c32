#!/usr/bin/env bash
# deploy/scripts/deduplicator-init.sh — bring up the deduplicator host (seed: startup.md, "Deduplicator Startup").
#
# Steps: wait for production RDS -> kalshictl init-db + migrate (production) -> wait for at least one healthy
#        gatherer -> systemd unit enabled and started -> wait for the deduplicator's own /health.
# Replaces the seed's pg_isready and curl loops with `kalshictl health --wait` (exit 6 with a clear message on
# timeout). No secret ever appears on a command line. Runbook: docs/runbooks/deployment.md. Run as root. Idempotent.
#
# Environment (all optional):
#   KALSHI_CONFIG          config file                      (/etc/kalshi/deduplicator.yaml)
#   KALSHICTL              kalshictl executable             (/opt/kalshi/venv/bin/kalshictl)
#   KALSHI_DEPLOY_DIR      this repository's deploy/ folder (/opt/kalshi/deploy)
#   KALSHI_RDS_WAIT        seconds to wait for RDS          (300)
#   KALSHI_GATHERER_WAIT   seconds to wait for a gatherer   (300, the seed's 60 x 5 s)
#   KALSHI_HEALTH_URL      the deduplicator's own /health   (http://10.0.4.10:8080/health: its config's http address)
#   KALSHI_HEALTH_WAIT     seconds to wait for it           (120)
#   KALSHI_MIGRATE         0 = skip init-db and migrate     (1)
#   KALSHI_SYSTEMD_DIR     where the unit is installed      (/etc/systemd/system)
#   SYSTEMCTL              systemctl executable             (systemctl)
set -euo pipefail

CONFIG="${KALSHI_CONFIG:-/etc/kalshi/deduplicator.yaml}"
KCTL="${KALSHICTL:-/opt/kalshi/venv/bin/kalshictl}"
DEPLOY_DIR="${KALSHI_DEPLOY_DIR:-/opt/kalshi/deploy}"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
SYSTEMD_DIR="${KALSHI_SYSTEMD_DIR:-/etc/systemd/system}"
RDS_WAIT="${KALSHI_RDS_WAIT:-300}"
GATHERER_WAIT="${KALSHI_GATHERER_WAIT:-300}"
HEALTH_URL="${KALSHI_HEALTH_URL:-http://10.0.4.10:8080/health}"
HEALTH_WAIT="${KALSHI_HEALTH_WAIT:-120}"

log() { printf '%s deduplicator-init: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# Step 1: wait for RDS (pg_isready equivalent: connect and ping; slow is fine). Before init-db the deduplicator
# role may not exist yet, so wait with the admin credentials (admin_dsn/admin_password) when we are to migrate.
if [ "${KALSHI_MIGRATE:-1}" = 1 ]; then RDS_CHECK=production:admin; else RDS_CHECK=production; fi
log "waiting up to ${RDS_WAIT}s for production RDS"
"$KCTL" health --config "$CONFIG" --check-db "$RDS_CHECK" --wait "$RDS_WAIT" --interval 5 --require degraded

# Step 2: production schema and roles (idempotent; uses admin_dsn/admin_password from the config), then prove the
# deduplicator's own credentials work (over TLS when sslmode says so).
if [ "${KALSHI_MIGRATE:-1}" = 1 ]; then
  log "kalshictl init-db and migrate (production)"
  "$KCTL" init-db --config "$CONFIG" --target production
  "$KCTL" migrate --config "$CONFIG" --target production
  "$KCTL" health --config "$CONFIG" --check-db production --require degraded
fi

# Step 3: wait for at least one healthy gatherer (URLs from deduplicator.gatherers[].health_url).
log "waiting up to ${GATHERER_WAIT}s for at least one healthy gatherer"
if ! "$KCTL" health --config "$CONFIG" --any --wait "$GATHERER_WAIT" --interval 5; then
  log "ERROR: no gatherer became healthy; see docs/runbooks/recovering-a-gatherer.md"
  exit 1
fi

# Step 4: the service.
log "installing and starting deduplicator.service"
install -m 0644 "$DEPLOY_DIR/systemd/deduplicator.service" "$SYSTEMD_DIR/deduplicator.service"
"$SYSTEMCTL" daemon-reload
"$SYSTEMCTL" enable deduplicator
"$SYSTEMCTL" start deduplicator

# Step 5: its own health check passing (degraded while some gatherers are still starting is acceptable).
log "waiting up to ${HEALTH_WAIT}s for the deduplicator's /health"
"$KCTL" health "$HEALTH_URL" --wait "$HEALTH_WAIT" --interval 5 --require degraded
log "deduplicator is up"
