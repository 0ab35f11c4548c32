"""#15 item 1: at ``log_level: debug`` no secret reaches the log (moto's Secrets Manager server, a real gatherer)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time

import psycopg

from kalshictl.db.embedded import free_port
from kalshictl.db.migrate import migrate
from kalshictl.logs import THIRD_PARTY, RedactFilter, register_secret, setup_logging
from tests.helpers import write_config
from tests.ops.util import AWS_ENV

SECRET = "sm-S3cret-value-never-in-logs-7f3a"


def _wait_for(path, text: str, proc: subprocess.Popen, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = path.read_text(errors="replace")
        if text in log:
            return log
        assert proc.poll() is None, f"gatherer exited early:\n{log[-3000:]}"
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged within {timeout}s:\n{path.read_text(errors='replace')[-3000:]}")


def test_gatherer_at_debug_never_logs_the_secret(pg_cluster, fresh_db, moto_endpoint, sm_client, tmp_path):
    sm_client.create_secret(Name="kt/log-gatherer", SecretString=SECRET)
    with psycopg.connect(pg_cluster.dsn(fresh_db), autocommit=True) as conn:
        migrate(conn, "gatherer", flavor="partitioned")
    cfg = write_config(
        tmp_path / "g.yaml",
        {
            "log_level": "debug",
            "gatherer": {
                # trust auth on the test cluster: the password is resolved (and fetched from SM) but not checked
                "database": {"dsn": pg_cluster.dsn(fresh_db), "password": "aws-sm:kt/log-gatherer"},
                "exchange": {
                    "rest_url": f"http://127.0.0.1:{free_port()}/trade-api/v2",
                    "timeout_s": 1,
                    "allow_insecure": True,
                },
                "http": {"host": "127.0.0.1", "port": 0},
            },
        },
    )
    log_path = tmp_path / "gatherer.log"
    env = {**os.environ, **AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint}
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kalshictl", "gather", "run", "--config", str(cfg)], stdout=out, stderr=out, env=env
        )
    try:
        # past the database (secret resolved through Secrets Manager), now retrying the closed exchange port
        log = _wait_for(log_path, "GET /exchange/status failed", proc)
    finally:
        proc.terminate()
        proc.wait(30)
    log = log_path.read_text(errors="replace")
    assert " DEBUG kalshictl" in log, "kalshictl's own loggers must follow log_level: debug"
    assert " DEBUG botocore" not in log and " DEBUG urllib3" not in log
    assert SECRET not in log


def test_filter_masks_registered_values_at_every_level():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactFilter())
    log = logging.getLogger("kalshictl.test_redact")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        value = "pw-with-'quote\"-and-more"
        register_secret(value)
        log.debug("dsn password=%s", value)
        log.error("escaped %r", {"pw": value})
        try:
            raise RuntimeError(f"failed with {value}")
        except RuntimeError:
            log.exception("boom")
        # a secret-named field is blanked even before its value is known
        log.info('body {"SecretString": "never-registered-xyz", "ARN": "arn:1"}')
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "pw-with" not in text and "never-registered-xyz" not in text
    assert "password=***" in text and "failed with ***" in text and "arn:1" in text


def test_setup_keeps_libraries_at_info():
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in THIRD_PARTY}
    try:
        setup_logging("debug")
        assert logging.getLogger("kalshictl.gatherer").getEffectiveLevel() == logging.DEBUG
        for name in THIRD_PARTY:
            assert logging.getLogger(name).getEffectiveLevel() >= logging.INFO, name
        assert all(any(isinstance(f, RedactFilter) for f in h.filters) for h in root.handlers)
        setup_logging("error")
        assert logging.getLogger("botocore").getEffectiveLevel() == logging.ERROR
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
