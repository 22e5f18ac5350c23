"""Central store addresses and connections, for every part that talks to the fleet's PostgreSQL:
what the user types, what SQLAlchemy needs, what may be shown, and one line for a failure.

Nothing here echoes a URL as typed: it may hold a password.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ..errors import UserError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL

# so the password need not be on the command line (where `ps` shows it to every user);
# libpq's own PGPASSWORD and ~/.pgpass work as well
CENTRAL_ENV = "AGEGENDER_CENTRAL"  # a kiosk's: where it forwards, as its own login
STORE_ENV = "AGEGENDER_STORE"  # the dashboard's, the reports' and the administrator's
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
MIGRATE_HINT = "python -m realtime.fleet migrate"
EXPECTED = "postgresql://USER@HOST[:PORT]/DATABASE"


def is_store_url(store: object) -> bool:
    """Whether a --store/--central value names a PostgreSQL server (else a data dir)."""
    return isinstance(store, str) and "://" in store and store.split("://", 1)[0].lower() in SCHEMES


def central_url(text: str) -> URL:
    """A PostgreSQL URL for SQLAlchemy's psycopg (v3) driver; UserError for anything else."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not is_store_url(text):
        raise UserError(f"a central store is a PostgreSQL URL: {EXPECTED}")
    try:
        url = make_url(f"postgresql+psycopg://{text.split('://', 1)[1]}")
        url.port  # noqa: B018 - a port that is not a number fails here, not at the first query
    except (ArgumentError, ValueError):
        raise UserError(f"not a usable PostgreSQL URL (expected {EXPECTED})") from None
    return url  # without a database libpq's default applies: the user's name


def shown_url(url: URL) -> str:
    """The URL as messages show it: the plain scheme, and never the password."""
    return url._replace(drivername="postgresql", password=None).render_as_string(hide_password=True)


def display_url(text: str) -> str:
    """A typed URL as messages show it (see shown_url)."""
    try:
        return shown_url(central_url(text))
    except UserError:
        return "(a URL that is not PostgreSQL's)"


def resolve_central(given: str | None, environ: Mapping[str, str] = os.environ, env: str = CENTRAL_ENV) -> str | None:
    """The option's URL, else the environment's; None for neither; UserError for one that is not PostgreSQL's."""
    url = given if given else environ.get(env) or None
    if url is not None:
        central_url(url)
    return url


def create_engine(
    url: str | URL,
    connect_timeout_s: float = 10.0,
    application: str = "agegender",
    pre_ping: bool = True,
    readonly: bool = False,
    pool_size: int = 2,
    statement_timeout_s: float | None = None,
) -> Engine:
    """A SQLAlchemy engine for the central store; UserError if the driver is missing.

    pre_ping tests a pooled connection before each use (one more round trip): worth it
    for a dashboard, whose database may have restarted overnight, not for a forwarder,
    which simply retries a batch that failed. A connect timeout, and optionally a statement
    timeout: nothing hangs on a dead host or a stuck server.
    """
    import sqlalchemy

    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise UserError("the central store needs psycopg 3, in the fleet extra: pip install -e '.[fleet]'") from None
    options: dict[str, Any] = {"postgresql_readonly": True} if readonly else {}
    return sqlalchemy.create_engine(
        central_url(url) if isinstance(url, str) else url,
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={
            "connect_timeout": max(1, int(connect_timeout_s)),
            "application_name": application,
            **({"options": f"-c statement_timeout={int(statement_timeout_s * 1000)}"} if statement_timeout_s else {}),
            # a connection whose peer vanished (a cut link, not a refusal) is found out
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
        },
        execution_options=options,
    )


def reason(exc: BaseException) -> str:
    """One line on why the central store failed, from psycopg's error (never the password)."""
    exc = getattr(exc, "orig", None) or exc
    state = getattr(exc, "sqlstate", None)
    text = str(exc)
    low = text.lower()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = (lines[0] if lines else type(exc).__name__).removeprefix("connection failed: ")
    if state == "42P01" or (state is None and "does not exist" in low and "relation" in low):
        return f"it is not a fleet store (run: {MIGRATE_HINT})"
    if state == "42501":  # the server's own words say which table and why
        return first
    if state in ("28P01", "28000") or "password authentication failed" in low or "no password supplied" in low or (
        "role" in low and "does not exist" in low
    ):
        return "authentication failed (check the user and the password: PGPASSWORD or ~/.pgpass)"
    if state == "3D000" or ("database" in low and "does not exist" in low):
        return "the database does not exist"
    if "connection refused" in low:
        return "connection refused"
    if "timeout expired" in low or "timed out" in low:
        return "connection timed out"
    if "could not translate host name" in low or "name or service not known" in low or "nodename nor servname" in low:
        return "unknown host"
    return first.split("FATAL:", 1)[-1].strip() or type(exc).__name__


@contextmanager
def connection(url: str, failing: str) -> Iterator[Connection]:
    """A connection to the central store for one command, closed after; a database error
    inside becomes the UserError "{failing} {the URL shown}: {why}"."""
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise UserError(f"{failing} {display_url(url)}: {reason(exc)}") from None
    finally:
        engine.dispose()
