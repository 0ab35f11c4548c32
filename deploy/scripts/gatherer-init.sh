#!/usr/bin/env bash
# deploy/scripts/gatherer-init.sh — bring up one gatherer host (seed: startup.md, "Gatherer Startup").
#
# Steps: [packages] -> local PostgreSQL cluster -> pg_hba -> kalshictl init-db (database, TimescaleDB, roles)
#        -> kalshictl migrate -> systemd unit enabled and started -> kalshictl health --wait.
# No secret ever appears on a command line: kalshictl reads them through the config's secret references.
# Runbook: docs/runbooks/deployment.md. Run as root. Idempotent.
#
# Environment (all optional):
#   KALSHI_CONFIG            config file                      (/etc/kalshi/gatherer.yaml)
#   KALSHICTL                kalshictl executable             (/opt/kalshi/venv/bin/kalshictl)
#   KALSHI_DEPLOY_DIR        this repository's deploy/ folder (/opt/kalshi/deploy)
#   KALSHI_INSTALL_PACKAGES  1 = install PostgreSQL + TimescaleDB with dnf (0)
#   KALSHI_SETUP_POSTGRES    0 = skip cluster init, pg_hba/TLS install and postgresql start (1)
#   KALSHI_TLS_CERT          this host's server certificate (/etc/kalshi/tls/server.crt): signed by the CA in the
#                            deduplicator's sslrootcert, with this host's private IP in subjectAltName
#   KALSHI_TLS_KEY           its private key                  (/etc/kalshi/tls/server.key)
#   KALSHI_HEALTH_WAIT       seconds to wait for the gatherer to report healthy (300)
#   KALSHI_HEALTH_REQUIRE    healthy or degraded (healthy)
#   KALSHI_SYSTEMD_DIR       where the unit is installed      (/etc/systemd/system)
#   SYSTEMCTL                systemctl executable             (systemctl)
set -euo pipefail

CONFIG="${KALSHI_CONFIG:-/etc/kalshi/gatherer.yaml}"
KCTL="${KALSHICTL:-/opt/kalshi/venv/bin/kalshictl}"
DEPLOY_DIR="${KALSHI_DEPLOY_DIR:-/opt/kalshi/deploy}"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
SYSTEMD_DIR="${KALSHI_SYSTEMD_DIR:-/etc/systemd/system}"
HEALTH_WAIT="${KALSHI_HEALTH_WAIT:-300}"
HEALTH_REQUIRE="${KALSHI_HEALTH_REQUIRE:-healthy}"

log() { printf '%s gatherer-init: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# Step 1: dependencies (the seed installs postgresql16-server and timescaledb).
if [ "${KALSHI_INSTALL_PACKAGES:-0}" = 1 ]; then
  log "installing postgresql16-server and timescaledb"
  dnf install -y postgresql16-server timescaledb
fi

# Step 2: the local cluster, its pg_hba.conf (scram-sha-256, TLS for the deduplicator) and the server.
if [ "${KALSHI_SETUP_POSTGRES:-1}" = 1 ]; then
  if ! runuser -u postgres -- test -s /var/lib/pgsql/data/PG_VERSION; then
    log "initialising the PostgreSQL cluster"
    postgresql-setup --initdb
  fi
  "$SYSTEMCTL" start postgresql
  hba_file="$(runuser -u postgres -- psql -tAc 'SHOW hba_file')"
  ident_file="$(runuser -u postgres -- psql -tAc 'SHOW ident_file')"
  # The pg_hba below admits dedup_reader only over hostssl: the server must speak TLS with a certificate the
  # deduplicator verifies (verify-full), so install it and turn ssl on before the pg_hba that needs it.
  tls_cert="${KALSHI_TLS_CERT:-/etc/kalshi/tls/server.crt}"
  tls_key="${KALSHI_TLS_KEY:-/etc/kalshi/tls/server.key}"
  if [ ! -s "$tls_cert" ] || [ ! -s "$tls_key" ]; then
    log "ERROR: $tls_cert or $tls_key missing: the hostssl pg_hba line for dedup_reader needs TLS on the server"
    exit 1
  fi
  data_dir="$(runuser -u postgres -- psql -tAc 'SHOW data_directory')"
  install -m 0644 -o postgres -g postgres "$tls_cert" "$data_dir/server.crt"
  install -m 0600 -o postgres -g postgres "$tls_key" "$data_dir/server.key"
  runuser -u postgres -- psql -v ON_ERROR_STOP=1 -tAc "ALTER SYSTEM SET ssl_cert_file = 'server.crt'"
  runuser -u postgres -- psql -v ON_ERROR_STOP=1 -tAc "ALTER SYSTEM SET ssl_key_file = 'server.key'"
  runuser -u postgres -- psql -v ON_ERROR_STOP=1 -tAc "ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.2'"
  runuser -u postgres -- psql -v ON_ERROR_STOP=1 -tAc "ALTER SYSTEM SET ssl = on"
  install -m 0640 -o postgres -g postgres "$DEPLOY_DIR/pg_hba/gatherer.pg_hba.conf" "$hba_file"
  install -m 0640 -o postgres -g postgres "$DEPLOY_DIR/pg_hba/pg_ident.conf" "$ident_file"
  "$SYSTEMCTL" reload postgresql
  if [ "$(runuser -u postgres -- psql -tAc 'SHOW ssl')" != on ]; then
    log "ERROR: ssl is not on after the reload; see the PostgreSQL log (certificate/key readable by postgres?)"
    exit 1
  fi
fi

# Step 3: database kalshi_ts, the timescaledb extension, roles gatherer and dedup_reader with the seed's grants.
log "kalshictl init-db"
"$KCTL" init-db --config "$CONFIG" --target gatherer

# Step 4: schema migrations.
log "kalshictl migrate"
"$KCTL" migrate --config "$CONFIG" --target gatherer

# Step 5: the service.
log "installing and starting gatherer.service"
install -m 0644 "$DEPLOY_DIR/systemd/gatherer.service" "$SYSTEMD_DIR/gatherer.service"
"$SYSTEMCTL" daemon-reload
"$SYSTEMCTL" enable gatherer
"$SYSTEMCTL" start gatherer

# Step 6: health check passing (deployment checklist).
log "waiting up to ${HEALTH_WAIT}s for the gatherer to be ${HEALTH_REQUIRE}"
"$KCTL" health --config "$CONFIG" --wait "$HEALTH_WAIT" --interval 5 --require "$HEALTH_REQUIRE"
log "gatherer is up"
