"""Stand up the databases and config files of a whole pipeline on this machine.

One :class:`LocalPipeline` creates embedded PostgreSQL clusters (one shared cluster, or one per gatherer plus one for
production when a test must stop a single gatherer's database), runs ``init-db`` and ``migrate`` for every database
through the same service code the CLI uses, generates each role's password into a 0600 secret file, and writes one
YAML config per service — so services can run in-process (demo, tests) or as ``kalshictl gather run --config F``
processes (chaos suite) with identical settings.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kalshictl.config import load_settings
from kalshictl.db import migrate as mig
from kalshictl.db.connect import connect
from kalshictl.db.embedded import PostgresCluster, free_port
from kalshictl.ops.init_db import init_database

if TYPE_CHECKING:
    from kalshictl.config import DedupSettings, GathererSettings, Settings

PROD_DB = "kalshi_prod"


@dataclass
class LocalPipelineConfig:
    """Shape of a local pipeline."""

    base_dir: Path
    gatherers: int = 3
    separate_clusters: bool = False  # one cluster per gatherer + one for production
    rest_url: str = "http://127.0.0.1:1/trade-api/v2"
    ws_url: str = "ws://127.0.0.1:1/trade-api/ws/v2"
    global_connections: int = 1
    orderbook_connections: int = 4
    markets_per_subscription: int = 256
    requests_per_second: float = 50.0
    snapshot_interval_s: float = 30.0
    flush_ms: int = 100
    sync_interval_ms: int = 200
    market_sync_interval_s: float = 30.0
    http_ports: list[int] = field(default_factory=list)  # per gatherer, then dedup; 0 = pick free ports
    extra: dict[str, Any] = field(default_factory=dict)


class LocalPipeline:
    """Embedded databases, roles, schemas and per-service config files for a local pipeline."""

    def __init__(self, config: LocalPipelineConfig) -> None:
        self.config = config
        self.base_dir = Path(config.base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o711)  # the unprivileged PostgreSQL user must traverse it
        self.secrets_dir = self.base_dir / "secrets"
        self.clusters: list[PostgresCluster] = []
        self.gatherer_clusters: list[PostgresCluster] = []
        self._production_cluster: PostgresCluster | None = None
        self.config_paths: dict[str, Path] = {}
        self._ports: list[int] = []

    @property
    def production_cluster(self) -> PostgresCluster:
        """Production's cluster (the gatherers' too unless ``separate_clusters``), once start_clusters made it."""
        if self._production_cluster is None:
            raise RuntimeError("the embedded PostgreSQL clusters are not started yet (start_clusters)")
        return self._production_cluster

    # -- names -----------------------------------------------------------------------------------------------
    def gatherer_name(self, i: int) -> str:
        return f"gatherer-{i + 1}"

    def gatherer_db(self, i: int) -> str:
        return "kalshi_ts" if self.config.separate_clusters else f"kalshi_ts_{i + 1}"

    # -- setup -----------------------------------------------------------------------------------------------
    def start_clusters(self) -> None:
        """Create and start the embedded PostgreSQL cluster(s)."""
        n = self.config.gatherers
        if self.config.separate_clusters:
            self.gatherer_clusters = [PostgresCluster(self.base_dir / f"pg-{self.gatherer_name(i)}") for i in range(n)]
            self._production_cluster = PostgresCluster(self.base_dir / "pg-production")
            self.clusters = [*self.gatherer_clusters, self._production_cluster]
        else:
            shared = PostgresCluster(self.base_dir / "pg")
            self.gatherer_clusters = [shared] * n
            self._production_cluster = shared
            self.clusters = [shared]
        for cluster in self.clusters:
            cluster.start()

    def _secret(self, role: str) -> str:
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        path = self.secrets_dir / f"{role}-password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        return f"file:{path}"

    def http_ports(self) -> list[int]:
        """The /health ports: one per gatherer, then the deduplicator's (chosen once, free ports for 0)."""
        if not self._ports:
            wanted = list(self.config.http_ports) or []
            need = self.config.gatherers + 1
            wanted += [0] * (need - len(wanted))
            self._ports = [p or free_port() for p in wanted]
        return self._ports

    def gatherer_document(self, i: int) -> dict[str, Any]:
        """The YAML document of gatherer ``i``."""
        cfg = self.config
        cluster = self.gatherer_clusters[i]
        db = self.gatherer_db(i)
        return {
            "gatherer": {
                "name": self.gatherer_name(i),
                "database": {
                    "dsn": cluster.dsn(db, "gatherer"),
                    "password": self._secret("gatherer"),
                    "admin_dsn": cluster.dsn(db, "postgres"),
                },
                "exchange": {
                    "allow_insecure": True,  # the local exchange speaks http:// and ws://
                    "rest_url": cfg.rest_url,
                    "ws_url": cfg.ws_url,
                    "requests_per_second": cfg.requests_per_second,
                },
                "websocket": {
                    "global_connections": cfg.global_connections,
                    "orderbook_connections": cfg.orderbook_connections,
                    "markets_per_subscription": cfg.markets_per_subscription,
                },
                "writer": {"flush_ms": cfg.flush_ms},
                "snapshot_poller": {"interval_s": cfg.snapshot_interval_s},
                "http": {"host": "127.0.0.1", "port": self.http_ports()[i]},
            },
            "roles": {"gatherer": self._secret("gatherer"), "dedup_reader": self._secret("dedup_reader")},
        }

    def dedup_document(self) -> dict[str, Any]:
        """The YAML document of the deduplicator."""
        cfg = self.config
        ports = self.http_ports()
        gatherers = []
        for i in range(cfg.gatherers):
            cluster = self.gatherer_clusters[i]
            gatherers.append(
                {
                    "name": self.gatherer_name(i),
                    "health_url": f"http://127.0.0.1:{ports[i]}/health",
                    "database": {
                        "dsn": cluster.dsn(self.gatherer_db(i), "dedup_reader"),
                        "password": self._secret("dedup_reader"),
                        "allow_insecure": True,  # loopback clusters without TLS
                    },
                }
            )
        return {
            "deduplicator": {
                "production": {
                    "dsn": self.production_cluster.dsn(PROD_DB, "deduplicator"),
                    "password": self._secret("deduplicator"),
                    "admin_dsn": self.production_cluster.dsn(PROD_DB, "postgres"),
                    "allow_insecure": True,
                },
                "gatherers": gatherers,
                "exchange": {
                    "allow_insecure": True,  # the local exchange speaks http://
                    "rest_url": cfg.rest_url,
                    "requests_per_second": cfg.requests_per_second,
                },
                "sync": {"interval_ms": cfg.sync_interval_ms, "market_sync_interval_s": cfg.market_sync_interval_s},
                "http": {"host": "127.0.0.1", "port": ports[cfg.gatherers]},
            },
            "exporter": {
                "production": {
                    "dsn": self.production_cluster.dsn(PROD_DB, "exporter"),
                    "password": self._secret("exporter"),
                    "allow_insecure": True,
                },
            },
            "roles": {"deduplicator": self._secret("deduplicator"), "exporter": self._secret("exporter")},
        }

    def write_configs(self) -> dict[str, Path]:
        """Write gatherer-N.yaml and deduplicator.yaml into the base directory."""
        for i in range(self.config.gatherers):
            path = self.base_dir / f"{self.gatherer_name(i)}.yaml"
            path.write_text(yaml.safe_dump(self.gatherer_document(i), sort_keys=False))
            self.config_paths[self.gatherer_name(i)] = path
        path = self.base_dir / "deduplicator.yaml"
        path.write_text(yaml.safe_dump(self.dedup_document(), sort_keys=False))
        self.config_paths["deduplicator"] = path
        return self.config_paths

    def init_databases(self) -> None:
        """init-db + migrate every database, exactly as an operator would with the CLI."""
        for i in range(self.config.gatherers):
            settings = load_settings(self.config_paths[self.gatherer_name(i)])
            db = settings.require("gatherer").database
            init_database(settings, "gatherer", db, timescale=True)
            with connect(db, admin=True, autocommit=True) as conn:
                mig.migrate(conn, "gatherer")
        settings = load_settings(self.config_paths["deduplicator"])
        db = settings.require("deduplicator").production
        init_database(settings, "production", db, timescale=True)
        with connect(db, admin=True, autocommit=True) as conn:
            mig.migrate(conn, "production")

    def setup(self) -> LocalPipeline:
        """Clusters, configs, roles and schemas: everything but the running services."""
        self.start_clusters()
        self.write_configs()
        self.init_databases()
        return self

    # -- settings for in-process services ------------------------------------------------------------------------
    def settings(self, name: str) -> Settings:
        """Parsed settings of one service (``gatherer-1``… or ``deduplicator``)."""
        return load_settings(self.config_paths[name])

    def gatherer_settings(self, i: int) -> GathererSettings:
        return self.settings(self.gatherer_name(i)).require("gatherer")

    def dedup_settings(self) -> DedupSettings:
        return self.settings("deduplicator").require("deduplicator")

    def production_dsn(self) -> str:
        """Superuser DSN of the production database (for tests and the demo's summary)."""
        return self.production_cluster.dsn(PROD_DB)

    def gatherer_admin_dsn(self, i: int) -> str:
        return self.gatherer_clusters[i].dsn(self.gatherer_db(i))

    def destroy(self) -> None:
        """Stop and delete every cluster."""
        for cluster in self.clusters:
            cluster.destroy()
