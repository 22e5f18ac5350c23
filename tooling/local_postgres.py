"""A throwaway PostgreSQL server on loopback, for the fleet tests and the load script.

It runs Debian's (or any) PostgreSQL binaries from a fresh data folder, on a free port
of 127.0.0.1, with password authentication over TCP as a real central server has.
PostgreSQL refuses to run as root, so as root it runs as the `postgres` user that the
package creates (`.ci/install-postgres.sh` installs it).

    with LocalPostgres.start() as pg:
        print(pg.url())          # postgresql://admin:...@127.0.0.1:PORT/fleet
        pg.stop(); pg.start_again()
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ADMIN = "fleet_admin"
DATABASE = "fleet"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (install them: .ci/install-postgres.sh)."""


def find_bin_dir() -> Path:
    """The folder of initdb/pg_ctl/postgres: PATH first, then Debian's versioned folders."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if Path(candidate, "pg_ctl").exists() and Path(candidate, "initdb").exists():
            return Path(candidate)
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found: run .ci/install-postgres.sh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalPostgres:
    root: Path
    bin_dir: Path
    port: int
    password: str = field(repr=False)
    run_as: str | None  # None: this user; else the user the server runs as (we are root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @classmethod
    def start(cls, database: str = DATABASE) -> "LocalPostgres":
        bin_dir = find_bin_dir()
        run_as = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root needs the 'postgres' user (installed with the postgresql package)") from None
            run_as = "postgres"
        # not under pytest's tmp_path: its 0700 parents would keep the postgres user out
        root = Path(tempfile.mkdtemp(prefix="agegender-pg-"))
        server = cls(root, bin_dir, _free_port(), secrets.token_urlsafe(16), run_as)
        pwfile = root / "pw"
        pwfile.write_text(server.password + "\n")
        if run_as:
            shutil.chown(root, run_as)
            shutil.chown(pwfile, run_as)
        server._run(
            "initdb", "-D", str(server.data), "-U", ADMIN, f"--pwfile={pwfile}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )
        pwfile.unlink()
        # loopback only; fsync off: a test server's data need not survive a power cut
        with open(server.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {server.port}\nunix_socket_directories = '{root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
            )
        server.start_again()
        server.psql(f"CREATE DATABASE {database}", database="postgres")
        return server

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / tool), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        return done

    def start_again(self) -> None:
        """Start the server (again, after stop), and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: fast (clients are cut off), or immediate (as a crash would)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        cmd = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status"]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True).returncode == 0

    def url(self, user: str = ADMIN, password: str | None = None, database: str = DATABASE) -> str:
        password = self.password if password is None and user == ADMIN else password
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = DATABASE) -> str:
        """Run SQL as the admin over the local socket; the output, unaligned."""
        done = self._run("psql", "-h", str(self.root), "-p", str(self.port),
                         "-U", ADMIN, "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql)
        return done.stdout

    def close(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
