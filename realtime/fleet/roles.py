"""Database roles of a fleet: one login role per kiosk, confined to its own rows, and
login roles for the dashboards, which may only read.

Created by the administrator (`python -m realtime.fleet add-kiosk` / `add-reader`),
as a role that may create roles (the store's owner with CREATEROLE, or a superuser).
The password is generated here and printed once: it is the kiosk's own secret.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from ..errors import UserError
from .migrations import KIOSK_GROUP, LATEST, READER_GROUP, current_version
from .urls import connection, display_url

# a kiosk id travels in URLs, file names and reports: kept to a safe alphabet
KIOSK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
LABEL_MAX_CHARS = 120


def check_kiosk_id(kiosk_id: str) -> str:
    if not KIOSK_ID.fullmatch(kiosk_id or ""):
        raise UserError(f"not a usable kiosk id: {kiosk_id[:64]!r} (1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit)")
    return kiosk_id


def check_label(name: str, value: str) -> str:
    """A site or location label: printable, at most LABEL_MAX_CHARS."""
    if len(value) > LABEL_MAX_CHARS or not value.isprintable() or value != value.strip():
        raise UserError(f"not a usable {name}: {value[:LABEL_MAX_CHARS]!r} (up to {LABEL_MAX_CHARS} printable characters, no spaces at either end)")
    return value


def check_labels(site: str | None, location: str | None) -> None:
    """The site and location a kiosk reports, each where given (None leaves it as it is)."""
    for name, value in (("site", site), ("location", location)):
        if value is not None:
            check_label(name, value)


def default_role(kiosk_id: str) -> str:
    """kiosk_<id>, lower case, with '.' and '-' as '_' (a role name needs no quoting then)."""
    return "kiosk_" + re.sub(r"[^a-z0-9_]", "_", kiosk_id.lower())


def check_role(role: str) -> str:
    if not ROLE_NAME.fullmatch(role or "") or role.startswith("pg_"):
        raise UserError(f"not a usable role name: {role[:64]!r} (lower-case letters, digits and '_', at most 63)")
    return role


@dataclass(frozen=True)
class NewLogin:
    role: str
    password: str

    def url_for(self, admin_url: str) -> str:
        """The admin's URL with this login instead: what the kiosk or dashboard connects with."""
        scheme, rest = admin_url.split("://", 1)
        host = rest.rsplit("@", 1)[-1]
        return f"{scheme}://{self.role}:{self.password}@{host}"


def _require_schema(conn, url: str) -> None:  # noqa: ANN001
    version = current_version(conn)
    if version < LATEST:
        raise UserError(f"the central store {display_url(url)} is at schema version {version}: run python -m realtime.fleet migrate first")


def add_kiosk(admin_url: str, kiosk_id: str, site: str = "", location: str = "", role: str | None = None) -> NewLogin:
    """Register a kiosk and create its login role; UserError if the id or role is taken."""
    from sqlalchemy import text

    check_kiosk_id(kiosk_id)
    check_label("site", site)
    check_label("location", location)
    role = check_role(role or default_role(kiosk_id))
    login = NewLogin(role, secrets.token_urlsafe(24))
    with connection(admin_url, f"cannot add kiosk {kiosk_id} to") as conn, conn.begin():
        _require_schema(conn, admin_url)
        if conn.execute(text("SELECT 1 FROM kiosks WHERE kiosk_id = :k"), {"k": kiosk_id}).first():
            raise UserError(f"kiosk {kiosk_id} is already registered")
        _create_login(conn, login, KIOSK_GROUP, "--role")
        conn.execute(
            text("INSERT INTO kiosks (kiosk_id, site, location, role, created_at) VALUES (:k, :s, :l, :r, :t)"),
            {"k": kiosk_id, "s": site, "l": location, "r": role, "t": time.time()},
        )
    return login


def add_reader(admin_url: str, role: str) -> NewLogin:
    """A login role for dashboards and reports: reads every kiosk's rows, writes nothing."""
    check_role(role)
    login = NewLogin(role, secrets.token_urlsafe(24))
    with connection(admin_url, f"cannot add reader {role} to") as conn, conn.begin():
        _require_schema(conn, admin_url)
        _create_login(conn, login, READER_GROUP, "--role")
    return login


def _create_login(conn, login: NewLogin, group: str, option: str) -> None:  # noqa: ANN001
    from sqlalchemy import text

    if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": login.role}).first():
        raise UserError(f"a database role {login.role} already exists: choose another with {option}")
    # CREATE ROLE takes no bind parameters: the server quotes the password literal itself
    password = conn.execute(text("SELECT quote_literal(:p)"), {"p": login.password}).scalar()
    conn.execute(text(f"CREATE ROLE {login.role} LOGIN PASSWORD {password} IN ROLE {group}"))
