"""Production over TLS with sslmode=verify-full; market metadata synced from the local exchange."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kalshictl.config import DatabaseSettings, RemoteDatabaseSettings
from kalshictl.db.connect import connect, connect_async
from kalshictl.errors import DatabaseUnreachable
from tests.dedup.conftest import DEDUP_PW, DedupEnv, make_db


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_cluster(pg_cluster_factory, tmp_path):
    ca_key, ca = _ca("kalshictl test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cluster = pg_cluster_factory()
    data = cluster.data_dir
    (data / "server.crt").write_bytes(_pem(cert))
    (data / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    for f in ("server.crt", "server.key"):
        if cluster.os_user:
            shutil.chown(data / f, cluster.os_user)
        (data / f).chmod(0o600)
    cluster.set_config(ssl="on", ssl_cert_file="'server.crt'", ssl_key_file="'server.key'")
    cluster.restart()
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "wrong-ca.pem").write_bytes(_pem(_ca("someone else")[1]))
    return cluster, tmp_path


async def test_production_verify_full(tls_cluster, monkeypatch) -> None:
    cluster, tmp = tls_cluster
    db = make_db(cluster, "production")
    monkeypatch.setenv("KT_DEDUP_PW", DEDUP_PW)

    def settings(ca: str, host: str = "127.0.0.1") -> DatabaseSettings:
        return DatabaseSettings(
            dsn=f"postgresql://deduplicator@{host}:{cluster.port}/{db}",
            password="env:KT_DEDUP_PW",
            sslmode="verify-full",
            sslrootcert=str(tmp / ca),
            connect_timeout_s=3,
        )

    with connect(settings("ca.pem")) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True
    with connect(settings("ca.pem", host="localhost")) as conn:
        assert conn.pgconn.ssl_in_use
    aconn = await connect_async(settings("ca.pem"), autocommit=True)  # the service's async path
    assert aconn.pgconn.ssl_in_use
    await aconn.close()
    with pytest.raises(DatabaseUnreachable) as info:
        connect(settings("wrong-ca.pem"))
    assert "certificate" in str(info.value).lower() and "sslrootcert" in (info.value.hint or "")
    assert DEDUP_PW not in str(info.value)
    with pytest.raises(DatabaseUnreachable):
        await connect_async(settings("wrong-ca.pem"))
    # a production section that names only the CA gets verify-full by default (#15 item 3)
    default = RemoteDatabaseSettings(
        dsn=f"postgresql://deduplicator@127.0.0.1:{cluster.port}/{db}",
        password="env:KT_DEDUP_PW",
        sslrootcert=str(tmp / "ca.pem"),
        connect_timeout_s=3,
    )
    assert default.sslmode == "verify-full"
    with connect(default) as conn:
        assert conn.pgconn.ssl_in_use
    with pytest.raises(DatabaseUnreachable):
        connect(default.model_copy(update={"sslrootcert": str(tmp / "wrong-ca.pem")}))


async def test_market_sync_from_local_exchange(dedup_env: DedupEnv) -> None:
    from kalshictl.dedup.market_sync import sync_once
    from kalshictl.kalshi.rest import KalshiRest
    from kalshictl.sim import SimConfig, SimExchange

    s = dedup_env.settings()
    async with SimExchange(SimConfig(markets=50, seed=1)) as ex:
        rest = KalshiRest(ex.rest_url, requests_per_second=200)
        pconn = await connect_async(s.production, autocommit=True)
        try:
            first = await sync_once(rest, pconn)
            markets = (await (await pconn.execute("SELECT count(*) FROM markets")).fetchone())[0]
            events = (await (await pconn.execute("SELECT count(*) FROM events")).fetchone())[0]
            series = (await (await pconn.execute("SELECT count(*) FROM series")).fetchone())[0]
            assert markets >= 50 and events > 0 and series > 0
            assert first["markets"] == markets
            row = await (
                await pconn.execute("SELECT status, data->>'ticker' = ticker, event_ticker IS NOT NULL FROM markets")
            ).fetchone()
            assert row[1] and row[2]
            second = await sync_once(rest, pconn)  # changed-since: unchanged objects are not rewritten
            assert second["markets"] <= markets
            cur = await pconn.execute("SELECT table_name, xmin_cursor > 0 FROM sync_cursors WHERE gatherer = '_rest'")
            assert dict(await cur.fetchall()) == {"series": True, "events": True, "markets": True}
        finally:
            await pconn.close()
            await rest.close()
