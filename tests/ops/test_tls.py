"""TLS: preflight's reachability check and `health --check-db` see TLS in use on a cluster with ssl=on, and a
configured sslmode=require fails against a server without TLS."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from kalshictl.config import DatabaseSettings
from kalshictl.db.embedded import PostgresCluster
from kalshictl.ops.preflight import check_reachable
from tests.ops.util import kctl


def _self_signed(folder) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = folder / "server.key"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)


@pytest.fixture(scope="module")
def tls_cluster():
    cluster = PostgresCluster().init()
    _self_signed(cluster.base_dir)
    for name in ("server.crt", "server.key"):
        cluster._chown(cluster.base_dir / name)
    cluster.set_config(
        ssl="on",
        ssl_cert_file=f"'{cluster.base_dir / 'server.crt'}'",
        ssl_key_file=f"'{cluster.base_dir / 'server.key'}'",
    )
    cluster.start()
    yield cluster
    cluster.destroy()


def test_tls_required_and_in_use(tls_cluster, pg_cluster):
    ok = check_reachable("production", DatabaseSettings(dsn=tls_cluster.dsn(), sslmode="require"))
    assert ok["ok"] and "TLS (require)" in ok["detail"]
    plain = check_reachable("production", DatabaseSettings(dsn=pg_cluster.dsn(), sslmode="require"))
    assert not plain["ok"] and "SSL" in plain["detail"]
    out = kctl("health", "--check-db", tls_cluster.dsn() + "?sslmode=require", "--allow-insecure", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"][0]["ssl"] is True


def test_command_line_dsns_verify_the_server_by_default(tls_cluster, pg_cluster, tmp_path):
    """`health --check-db DSN` and `rotate-password --admin-dsn DSN` use the services' TLS rules: verify-full with a
    CA, a weaker mode or plaintext only with --allow-insecure."""
    ca = str(tls_cluster.base_dir / "server.crt")
    verified = kctl("health", "--check-db", tls_cluster.dsn(), "--sslrootcert", ca, "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["results"][0]["ssl"] is True
    for dsn in (pg_cluster.dsn(), tls_cluster.dsn() + "?sslmode=require", tls_cluster.dsn() + "?sslmode=prefer"):
        refused = kctl("health", "--check-db", dsn)
        assert refused.returncode == 2 and "--check-db:" in refused.stderr, refused.stderr
    plaintext = kctl("health", "--check-db", pg_cluster.dsn(), "--sslrootcert", ca)  # the server has no TLS
    assert plaintext.returncode == 4, plaintext.stderr
    secret = tmp_path / "pw.json"
    args = ["rotate-password", "--user", "deduplicator", "--secret", f"file:{secret}", "--admin-dsn", pg_cluster.dsn()]
    rotation = kctl(*args)
    assert rotation.returncode == 2 and "--admin-dsn:" in rotation.stderr and "--allow-insecure" in rotation.stderr
    assert not secret.exists()  # refused before any step
    wrong_ca = tmp_path / "other.crt"
    _self_signed(tmp_path)  # another self-signed certificate: not the server's
    (tmp_path / "server.crt").rename(wrong_ca)
    untrusted = kctl("health", "--check-db", tls_cluster.dsn(), "--sslrootcert", str(wrong_ca))
    assert untrusted.returncode == 4 and "certificate" in untrusted.stderr.lower(), untrusted.stderr
