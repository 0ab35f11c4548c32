"""#15 Low items on deploy/: gatherer-init.sh turns TLS on before installing the hostssl pg_hba it needs."""

from __future__ import annotations

from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_gatherer_init_enables_tls_with_the_hostssl_pg_hba():
    code = [
        line.strip()
        for line in (DEPLOY / "scripts" / "gatherer-init.sh").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    hba = next(i for i, line in enumerate(code) if "gatherer.pg_hba.conf" in line)
    ssl_on = next(i for i, line in enumerate(code) if "ALTER SYSTEM SET ssl = on" in line)
    check = next(i for i, line in enumerate(code) if "SHOW ssl" in line)
    assert ssl_on < hba < check  # TLS first, then the pg_hba that admits dedup_reader only over hostssl, then verify
    assert any("server.key" in line and "0600" in line for line in code)
    assert "hostssl" in (DEPLOY / "pg_hba" / "gatherer.pg_hba.conf").read_text()
