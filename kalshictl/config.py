"""YAML configuration -> typed, validated settings.

* Every key has a default or a clear error; an unknown or wrongly typed key is a :class:`ConfigError` that names its
  path, e.g. ``gatherer.websocket.connections: expected int``.
* ``KALSHI_<SECTION>__<KEY>__...`` environment variables override keys (``KALSHI_GATHERER__WEBSOCKET__CONNECTIONS=12``).
* Secrets are references (``env:NAME``, ``file:/path``, ``aws-sm:secret-id``) kept as :class:`SecretRef` and resolved
  only when used (see :mod:`kalshictl.secrets`); they are never printed.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal, overload

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kalshictl.errors import ConfigError

ENV_PREFIX = "KALSHI_"


class SecretRef(str):
    """A reference to a secret (``env:NAME``, ``file:/path``, ``aws-sm:id[#json-key]``), never the secret itself."""

    SCHEMES = ("env:", "file:", "aws-sm:")

    def __repr__(self) -> str:
        return f"SecretRef({str.__str__(self)!r})"

    def resolve(self) -> str:
        """Resolve the reference to the secret value (only call this at the point of use)."""
        from kalshictl.secrets import resolve_secret

        return resolve_secret(str(self))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            _secret_ref, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )


def _secret_ref(value: Any) -> SecretRef:
    if not isinstance(value, str) or not value.startswith(SecretRef.SCHEMES):
        raise ValueError("must be a secret reference: env:NAME, file:/path or aws-sm:secret-id (never a literal)")
    return SecretRef(value)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class DatabaseSettings(_Section):
    """How a service reaches one PostgreSQL database.

    ``dsn`` carries host, port, database, user and TLS options but no password; ``password`` is a secret reference.
    ``admin_dsn``/``admin_password`` are used only by ``init-db`` and ``migrate``.
    """

    dsn: str = Field(description="libpq URI or key=value string without a password")
    password: SecretRef | None = None
    admin_dsn: str | None = None
    admin_password: SecretRef | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    sslrootcert: str | None = None
    allow_insecure: bool = Field(
        False, description="permit a TLS mode that does not verify the server (local tests and demos only)"
    )
    connect_timeout_s: float = Field(10.0, gt=0)
    pool_min: int = Field(1, ge=0)
    pool_max: int = Field(8, ge=1)

    @field_validator("dsn", "admin_dsn")
    @classmethod
    def _no_password_in_dsn(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from kalshictl.db.dsn import dsn_has_password, parse_dsn
        from kalshictl.errors import ConfigError as _ConfigError

        try:
            parse_dsn(value)
        except _ConfigError:  # never echo it: an unparseable DSN may hold a password
            raise ValueError("not a valid libpq URI or key=value string") from None
        if dsn_has_password(value):
            raise ValueError("must not contain a password; put a secret reference in the password key")
        return value


WEAK_SSLMODES = ("disable", "allow", "prefer", "require")


def _dsn_param(dsn: str | None, key: str) -> str | None:
    if not dsn:
        return None
    from kalshictl.db.dsn import parse_dsn

    return parse_dsn(dsn).get(key)


class RemoteDatabaseSettings(DatabaseSettings):
    """A database reached over the network (production, a gatherer from the deduplicator): TLS that verifies the
    server is the default and the only mode allowed, unless ``allow_insecure: true``.

    With no ``sslmode`` (here or in the DSN) the connection uses ``verify-full``; ``verify-ca``/``verify-full`` need
    the CA in ``sslrootcert`` (a file, or ``system`` for the OS store). ``disable``/``allow``/``prefer``/``require``
    (no certificate check) are refused unless ``allow_insecure: true``.
    """

    @model_validator(mode="after")
    def _verified_tls(self) -> RemoteDatabaseSettings:
        modes = {m for m in (self.sslmode, _dsn_param(self.dsn, "sslmode"), _dsn_param(self.admin_dsn, "sslmode")) if m}
        if self.allow_insecure:
            return self
        weak = sorted(modes & set(WEAK_SSLMODES))
        if weak:
            raise ValueError(
                f"sslmode {weak[0]} does not verify the server; use verify-full (or verify-ca) with sslrootcert, "
                "or set allow_insecure: true (tests and demos only)"
            )
        if not modes:
            self.__dict__["sslmode"] = "verify-full"  # no re-validation on this assignment
        if not (self.sslrootcert or _dsn_param(self.dsn, "sslrootcert")):
            raise ValueError(
                "sslrootcert: required to verify the server (the CA bundle file, or 'system'); "
                "or set allow_insecure: true (tests and demos only)"
            )
        return self


def _local_socket(dsn: str) -> bool:
    """True if every host of a DSN is a Unix-domain socket (TLS does not apply there)."""
    from kalshictl.db.dsn import parse_dsn

    params = parse_dsn(dsn)
    if params.get("hostaddr"):
        return False
    hosts = params.get("host") or os.environ.get("PGHOST", "")
    return all(h.startswith(("/", "@")) for h in hosts.split(",")) if hosts else True


def command_line_database(
    dsn: str,
    *,
    option: str,
    password: SecretRef | None = None,
    sslrootcert: str | None = None,
    allow_insecure: bool = False,
) -> DatabaseSettings:
    """Settings for a DSN given on the command line (``--admin-dsn``, ``--check-db``): over TCP the same TLS rules as
    a remote database in the config (``verify-full`` by default, a CA from ``sslrootcert``, weaker modes only with
    ``allow_insecure``); a Unix-domain socket as is. Errors name ``option``."""
    if _local_socket(dsn):
        return DatabaseSettings(dsn=dsn, password=password)
    try:
        return RemoteDatabaseSettings(
            dsn=dsn, password=password, sslrootcert=sslrootcert, allow_insecure=allow_insecure
        )
    except ValidationError as exc:
        text = _format_validation_error(exc).replace("(root): ", "").replace("allow_insecure: true", "--allow-insecure")
        raise ConfigError(
            f"{option}: {text}", hint="give the CA with --sslrootcert (or sslrootcert= in the DSN; 'system' for the OS)"
        ) from None


class ExchangeSettings(_Section):
    """Where the exchange is and how to authenticate (API key id + private key reference).

    The URLs must be ``https://`` and ``wss://`` unless ``allow_insecure: true`` (the local exchange: demos, tests).
    """

    allow_insecure: bool = Field(False, description="permit http:// and ws:// URLs (the local exchange only)")
    rest_url: str = "https://external-api.kalshi.com/trade-api/v2"
    ws_url: str = "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
    api_key_id: str | None = None
    private_key: SecretRef | None = None
    requests_per_second: float = Field(18.0, gt=0, description="REST budget (Basic tier is 20 req/s)")
    timeout_s: float = Field(15.0, gt=0)

    @field_validator("rest_url", "ws_url")
    @classmethod
    def _encrypted(cls, value: str, info: ValidationInfo) -> str:
        secure, plain = ("https", "http") if info.field_name == "rest_url" else ("wss", "ws")
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme == secure:
            return value
        if scheme == plain and info.data.get("allow_insecure"):
            return value
        if scheme == plain:
            raise ValueError(
                f"{plain}:// is not encrypted; use {secure}:// or set allow_insecure: true in this section "
                "(the local exchange only)"
            )
        raise ValueError(f"expected a {secure}:// URL, got {value!r}")


def _public_bind(host: str) -> str | None:
    """Why binding ``host`` would serve every network (None if it does not: loopback, private, a host name)."""
    import ipaddress

    if host.strip() in ("", "*"):
        return "an empty host binds every interface"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # a host name: resolved when binding
    if address.is_unspecified:
        return f"{host} binds every interface"
    if address.is_global:
        return f"{host} is a public address"
    return None


class HttpSettings(_Section):
    """The /health and /metrics listener: loopback or a private interface, never every interface (0.0.0.0, ::) or a
    public address, unless ``allow_insecure: true``."""

    allow_insecure: bool = Field(False, description="permit binding every interface or a public address")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)

    @field_validator("host")
    @classmethod
    def _not_public(cls, value: str, info: ValidationInfo) -> str:
        why = _public_bind(value)
        if why and not info.data.get("allow_insecure"):
            raise ValueError(
                f"{why}; use 127.0.0.1 or the private interface that is polled, or set allow_insecure: true "
                "in this section"
            )
        return value


class WebSocketSettings(_Section):
    """Connection layout (6 global + 144 orderbook connections, docs/gatherer.md) and liveness."""

    global_connections: int = Field(6, ge=1)
    orderbook_connections: int = Field(144, ge=0)
    markets_per_subscription: int = Field(256, ge=1, description="per-subscription market cap (error 26)")
    subscriptions_per_connection: int = Field(
        12, ge=1, description="order-book subscriptions a connection holds (capacity = connections x this x cap)"
    )
    ping_timeout_s: float = Field(30.0, gt=0, description="no server ping/frame for this long = dead socket")
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    use_yes_price: bool = Field(False, description="sent explicitly on every subscribe (Kalshi will flip the default)")
    commands_per_minute: float = Field(120.0, gt=0, description="per-connection command budget (token bucket)")
    command_burst: int = Field(60, ge=1, description="commands a connection may send at once")
    seq_probe_interval_s: float = Field(5.0, gt=0, description="seq probe of every order-book sid this often")
    subscribe_retries: int = Field(3, ge=0, description="retries of a subscribe refused with error 18 (timeout)")
    registry_refresh_s: float = Field(60.0, gt=0, description="GET /markets?min_updated_ts=... this often")
    record_mve: bool = Field(True, description="also list multivariate (KXMVE) markets and record their books")

    @property
    def connections(self) -> int:
        """Total target connections (the health threshold base)."""
        return self.global_connections + self.orderbook_connections

    @property
    def capacity(self) -> int:
        """Order-book markets this layout can hold (before any cap the exchange teaches with error 26)."""
        return self.orderbook_connections * self.subscriptions_per_connection * self.markets_per_subscription


class WriterSettings(_Section):
    """Batch writers: flush on rows or milliseconds, whichever first; bounded memory."""

    batch_rows: int = Field(5000, ge=1)
    flush_ms: int = Field(200, ge=1)
    max_buffer_rows: int = Field(2_000_000, ge=1, description="per table; beyond it the gatherer degrades loudly")
    max_buffer_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024 * 1024,
        description="per table, estimated memory of the buffered rows; beyond it the gatherer degrades loudly",
    )


class SnapshotPollerSettings(_Section):
    """The REST snapshot poller."""

    enabled: bool = True
    interval_s: float = Field(300.0, gt=0, description="target period for a full pass over subscribed markets")
    share_of_rate_limit: float = Field(0.5, gt=0, le=1, description="fraction of the REST budget it may use")
    depth: int = Field(0, ge=0, le=100)


class RetentionSettings(_Section):
    """Gatherer retention (docs/retention.md): drop partitions older than ``keep_days`` once every row is merged."""

    enabled: bool = Field(True, description="run the policy on a timer inside `gather run`")
    keep_days: float = Field(7.0, ge=0, description="keep partitions whose range ends less than this long ago")
    interval_s: float = Field(3600.0, gt=0, description="period of the timer (clock seconds)")


class DiskSettings(_Section):
    """Free space of the database's filesystem (docs/retention.md, "How the gatherer sees its disk")."""

    path: str | None = Field(None, description="a path on the database's filesystem (statvfs), for a local database")
    size_bytes: int | None = Field(
        None, ge=1, description="the database volume's size, for a remote one: free = size_bytes - pg_database_size"
    )
    interval_s: float = Field(60.0, gt=0, description="how often the free space is read")
    warning_free_percent: float = Field(20.0, gt=0, lt=100, description="/health degraded below this much free")
    critical_free_percent: float = Field(10.0, ge=0, lt=100, description="/health unhealthy below this much free")

    @model_validator(mode="after")
    def _critical_below_warning(self) -> DiskSettings:
        if self.critical_free_percent >= self.warning_free_percent:
            raise ValueError(
                f"critical_free_percent ({self.critical_free_percent:g}) must be below warning_free_percent"
                f" ({self.warning_free_percent:g})"
            )
        return self


# A gatherer name: stored in varchar(64) columns and used in metric labels; "_rest" and other "_" names are reserved.
GATHERER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class GathererSettings(_Section):
    """Settings of one gatherer (``gatherer:`` section)."""

    name: str = Field("gatherer-1", pattern=GATHERER_NAME, description="1-64 of A-Z a-z 0-9 _ . -")
    database: DatabaseSettings
    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)
    writer: WriterSettings = Field(default_factory=WriterSettings)
    snapshot_poller: SnapshotPollerSettings = Field(default_factory=SnapshotPollerSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    disk: DiskSettings = Field(default_factory=DiskSettings)
    market_status: list[str] = Field(default_factory=lambda: ["unopened", "open", "paused", "closed"])
    shutdown_timeout_s: float = Field(25.0, gt=0)


class GathererSource(_Section):
    """One gatherer as the deduplicator sees it: its database (as dedup_reader) and its /health URL."""

    name: str = Field(pattern=GATHERER_NAME)
    database: RemoteDatabaseSettings
    health_url: str | None = None


class SyncSettings(_Section):
    """Deduplicator sync loops."""

    interval_ms: int = Field(250, ge=1)
    min_batch_rows: int = Field(1000, ge=1)
    max_batch_rows: int = Field(200_000, ge=1)
    market_sync_interval_s: float = Field(300.0, gt=0)
    wait_for_gatherer_s: float = Field(300.0, ge=0)
    market_sync_enabled: bool = True
    gap_margin_ms: float = Field(2000.0, ge=0, description="clock slack around a gap record (gap-trust rule)")
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(10.0, gt=0)
    shutdown_timeout_s: float = Field(20.0, gt=0, description="wait this long for in-flight merges at stop")


class HistorySettings(_Section):
    """``kalshictl history import`` (docs/research.md, "History"): its own share of the exchange REST budget."""

    requests_per_second: float = Field(
        5.0, gt=0, description="REST requests/s for the import, on top of exchange.requests_per_second's users"
    )
    workers: int = Field(8, ge=1, le=32, description="units (endpoint, market or selection, day) fetched at once")


class DedupSettings(_Section):
    """Settings of the deduplicator (``deduplicator:`` section)."""

    production: RemoteDatabaseSettings
    gatherers: list[GathererSource] = Field(min_length=1)
    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    disk: DiskSettings = Field(default_factory=DiskSettings)

    @model_validator(mode="after")
    def _unique_names(self) -> DedupSettings:
        names = [g.name for g in self.gatherers]
        if len(set(names)) != len(names):
            raise ValueError(f"gatherer names must be unique, got {names}")
        return self


class S3Settings(_Section):
    """Export destination."""

    dest: str | None = Field(None, description="s3://bucket/prefix")
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: SecretRef | None = Field(None, description="default: the boto3 credential chain")
    secret_access_key: SecretRef | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"


class IcebergSettings(_Section):
    """The Iceberg catalog and warehouse of ``kalshictl export`` (docs/research.md, "Iceberg tables").

    The catalog is the Iceberg SQL/JDBC catalog's tables (``iceberg_tables``, ``iceberg_namespace_properties``) in
    ``catalog_schema`` of ``catalog_database`` (default: ``exporter.production``, so Spark/Trino JDBC catalogs can
    share it), or a SQLite file (``sqlite_path``) for local use.
    """

    warehouse: str | None = Field(None, description="s3://bucket/prefix of new tables (default: s3.dest)")
    catalog_name: str = Field("kalshi", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    namespace: str = Field("kalshi", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    catalog_database: RemoteDatabaseSettings | None = Field(None, description="default: exporter.production")
    catalog_schema: str = Field("iceberg", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    sqlite_path: str | None = Field(None, description="a SQLite catalog file instead of PostgreSQL")

    @model_validator(mode="after")
    def _one_catalog(self) -> IcebergSettings:
        if self.sqlite_path and self.catalog_database is not None:
            raise ValueError("set catalog_database or sqlite_path, not both")
        return self


class ExportSettings(_Section):
    """Settings of the exporter (``exporter:`` section): production read as the read-only exporter role."""

    production: RemoteDatabaseSettings
    s3: S3Settings = Field(default_factory=S3Settings)
    format: Literal["iceberg", "parquet"] = Field("iceberg", description="what `kalshictl export` writes by default")
    iceberg: IcebergSettings = Field(default_factory=IcebergSettings)
    rows_per_file: int = Field(2_000_000, ge=1, description="a partition splits into part files of at most this")
    batch_rows: int = Field(50_000, ge=1, description="rows fetched per server-side cursor round trip")
    settle_s: float = Field(3600.0, ge=0, description="a day is final (skipped on re-run) this long after it ends")
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"


class ProductionTierSettings(_Section):
    """Production's place in the data lifecycle (``production:`` section, read with the deduplicator's config):
    closed days are exported to the cold tier (``exporter.s3``) and dropped from production after ``keep_days``
    once verified (docs/deduplicator.md, "Cold tier and production retention")."""

    keep_days: int = Field(30, ge=0, description="whole UTC days kept in production before today")
    export_settle_s: float = Field(3600.0, ge=0, description="a day is exported this long after it ends")


class RoleSecrets(_Section):
    """Where init-db / rotate-password find each role's password."""

    gatherer: SecretRef | None = None
    dedup_reader: SecretRef | None = None
    deduplicator: SecretRef | None = None
    exporter: SecretRef | None = None


class Settings(_Section):
    """A whole config file; each service reads its own section."""

    gatherer: GathererSettings | None = None
    deduplicator: DedupSettings | None = None
    exporter: ExportSettings | None = None
    production: ProductionTierSettings | None = None
    roles: RoleSecrets = Field(default_factory=RoleSecrets)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    source_path: str | None = Field(None, exclude=True)

    @overload
    def require(self, section: Literal["gatherer"]) -> GathererSettings: ...
    @overload
    def require(self, section: Literal["deduplicator"]) -> DedupSettings: ...
    @overload
    def require(self, section: Literal["exporter"]) -> ExportSettings: ...
    @overload
    def require(self, section: Literal["production"]) -> ProductionTierSettings: ...
    def require(self, section: str) -> object:
        """Return a section or raise a ConfigError saying it is missing."""
        value = getattr(self, section)
        if value is None:
            where = f" in {self.source_path}" if self.source_path else ""
            raise ConfigError(f"{section}: section missing{where}")
        return value


# ---------------------------------------------------------------------------------------------------------------


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        kind = err["type"]
        msg = err["msg"]
        if kind == "extra_forbidden":
            msg = "unknown key"
        elif kind in ("int_type", "int_parsing"):
            msg = "expected int"
        elif kind in ("float_type", "float_parsing"):
            msg = "expected number"
        elif kind in ("bool_type", "bool_parsing"):
            msg = "expected true or false"
        elif kind == "string_pattern_mismatch" and str(err["loc"][-1]) == "name":
            msg = "expected 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit"
        elif kind == "missing":
            msg = "required key missing"
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
        lines.append(f"{path}: {msg}")
    return "; ".join(lines)


def _env_value(raw: str) -> Any:
    """An override's value: parsed as a YAML scalar/collection when it is valid YAML, else the raw string."""
    if raw == "":
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _apply_env_overrides(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = data
        for key in path[:-1]:
            nxt = node.get(key)
            if not isinstance(nxt, dict):
                nxt = {}
                node[key] = nxt
            node = nxt
        node[path[-1]] = _env_value(raw)
    return data


def parse_settings(data: Any, *, source: str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Validate a parsed YAML document (plus env overrides) into :class:`Settings`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source or 'config'}: expected a mapping at the top level")
    data = _apply_env_overrides(copy.deepcopy(data), dict(os.environ if environ is None else environ))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        prefix = f"{source}: " if source else ""
        raise ConfigError(prefix + _format_validation_error(exc), hint="see docs/configuration.md") from None
    settings.source_path = source
    return settings


def load_settings(path: str | Path, *, environ: dict[str, str] | None = None) -> Settings:
    """Load and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_settings(data, source=str(path), environ=environ)
