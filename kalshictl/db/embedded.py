"""Throwaway / embedded PostgreSQL clusters on loopback, for tests, the demo and benchmarks.

Binaries come from the machine (``initdb`` on PATH, ``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``) or, as a
fallback, from the ``pgserver`` package. PostgreSQL refuses to run as root, so when we are root the cluster is owned
by and run as an unprivileged OS user (``postgres`` if it exists), as pgserver does.

Authentication: the superuser ``postgres`` is trusted on loopback and the private socket (a throwaway cluster);
every other role must present a SCRAM-SHA-256 password, so role and rotation tests are real.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kalshictl.errors import KalshiCtlError

SUPERUSER = "postgres"


def find_pg_bindir() -> Path:
    """Locate a directory holding initdb, pg_ctl and postgres."""
    candidates: list[Path] = []
    env = os.environ.get("KALSHI_PG_BINDIR")
    if env:
        candidates.append(Path(env))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
            if out:
                candidates.append(Path(out))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for cand in candidates:
        if _has_server(cand):
            return cand
    # fallback: the binaries bundled with the pgserver package (found without importing it)
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec and spec.origin:
        cand = Path(spec.origin).parent / "pginstall" / "bin"
        if _has_server(cand):
            return cand
    raise KalshiCtlError(
        "no PostgreSQL server binaries found (initdb, pg_ctl, postgres)",
        hint="install the postgresql server package, or `pip install pgserver`",
    )


def _has_server(folder: Path) -> bool:
    return all((folder / exe).exists() for exe in ("initdb", "pg_ctl", "postgres"))


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserveruser", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise KalshiCtlError("running as root and no unprivileged OS user (postgres) exists to own the cluster")


@dataclass
class PostgresCluster:
    """One PostgreSQL cluster in its own directory, listening on 127.0.0.1:``port``."""

    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kalshictl-pg-")))
    port: int = 0
    fast: bool = True  # fsync off etc.: a throwaway cluster
    settings: dict[str, str] = field(default_factory=dict)
    bindir: Path = field(default_factory=find_pg_bindir)
    os_user: str | None = field(default_factory=_run_as)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()

    # -- paths -------------------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URI for this cluster (no password)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    # -- process control ---------------------------------------------------------------------------------------
    def _cmd(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs: dict = {"capture_output": True, "text": True, "timeout": timeout, "cwd": str(self.base_dir)}
        if self.os_user:
            kwargs["user"] = self.os_user
            kwargs["group"] = pwd.getpwnam(self.os_user).pw_gid
            kwargs["extra_groups"] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kwargs["env"] = env
        proc = subprocess.run(list(args), **kwargs)
        if check and proc.returncode != 0:
            tail = ""
            if self.log_file.exists():
                with contextlib.suppress(OSError):
                    tail = "\n" + "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise KalshiCtlError(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()}{tail}")
        return proc

    def _chown(self, path: Path) -> None:
        if self.os_user:
            entry = pwd.getpwnam(self.os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _check_traversable(self) -> None:
        if not self.os_user:
            return
        for parent in self.base_dir.resolve().parents:
            if not os.stat(parent).st_mode & 0o001:
                raise KalshiCtlError(
                    f"{parent} is not traversable by the OS user {self.os_user!r} that runs PostgreSQL",
                    hint=f"chmod o+x {parent}, or put the cluster under a world-traversable directory such as /tmp",
                )

    def init(self) -> PostgresCluster:
        """Run initdb and write the configuration (idempotent: an existing cluster is kept)."""
        self._check_traversable()
        self._chown(self.base_dir)
        if (self.data_dir / "PG_VERSION").exists():
            return self
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        self._cmd(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-instructions",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--locale=C",
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "password_encryption": "'scram-sha-256'",
            "max_connections": "200",
            "shared_buffers": "'128MB'",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        if self.fast:
            conf.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        conf.update(self.settings)
        with open(self.data_dir / "postgresql.auto.conf", "a") as fh:
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")
        hba = (
            f"local all {SUPERUSER} trust\n"
            f"host all {SUPERUSER} 127.0.0.1/32 trust\n"
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        (self.data_dir / "pg_hba.conf").write_text(hba)
        return self

    def set_config(self, **params: str) -> None:
        """Append settings to postgresql.auto.conf (takes effect on restart/reload)."""
        with open(self.data_dir / "postgresql.auto.conf", "a") as fh:
            for key, value in params.items():
                fh.write(f"{key} = {value}\n")

    def start(self, timeout: float = 60) -> PostgresCluster:
        """Start the server and wait until it accepts connections."""
        if not (self.data_dir / "PG_VERSION").exists():
            self.init()
        if self.is_running():
            return self
        self._cmd(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(int(timeout)),
            "-o",
            f"-p {self.port}",
            "start",
            timeout=timeout + 10,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        """Block until a TCP connection as the superuser succeeds."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` or ``immediate``); a stopped server is left alone."""
        if not self.is_running():
            return
        self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        """Stop then start."""
        self.stop()
        self.start()

    def is_running(self) -> bool:
        """True if pg_ctl reports the server running."""
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        proc = self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "status", check=False)
        return proc.returncode == 0

    def create_database(self, name: str) -> None:
        """Create a database if it does not exist."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
