"""The central store's schema: versioned SQL, applied in order by `python -m realtime.fleet migrate`.

Each version is plain SQL, frozen once released: a later change is a new version, never
an edit, so every server reaches the same schema from wherever it stands. The applied
versions are rows of schema_migrations, written in the same transaction as the
version's statements (PostgreSQL's DDL is transactional): a failed migration leaves
the store at the version before it. An advisory lock keeps two migrate commands apart.

The tables are those of realtime.kiosk.tables with central=True (a test checks the two
agree); indexes serve the dashboard's queries: a time range over all kiosks (minute,
hour, start), or over some kiosks (their kiosk id leads every key).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .urls import connection

# PostgreSQL advisory lock key for migrations ("AGEG" "MIGR")
LOCK_KEY = 0x4147_4547_4D49_4752 & 0x7FFF_FFFF_FFFF_FFFF
KIOSK_GROUP = "fleet_kiosk"
READER_GROUP = "fleet_reader"
DATA_TABLES = ("runs", "cameras", "gaps", "visits", "minute_stats", "minute_hist", "live")

_VERSION_1 = (
    """CREATE TABLE kiosks (
    kiosk_id TEXT NOT NULL PRIMARY KEY,
    site TEXT DEFAULT '' NOT NULL,
    location TEXT DEFAULT '' NOT NULL,
    role TEXT NOT NULL UNIQUE,
    store_id TEXT,
    age_brackets TEXT,
    created_at FLOAT NOT NULL,
    first_contact FLOAT,
    last_contact FLOAT,
    backlog BIGINT)""",
    "CREATE INDEX kiosks_site_location ON kiosks (site, location)",
    """CREATE TABLE runs (
    kiosk_id TEXT NOT NULL,
    id BIGINT NOT NULL,
    started_at FLOAT NOT NULL,
    heartbeat_at FLOAT NOT NULL,
    stopped_at FLOAT,
    stop_reason TEXT,
    source TEXT,
    frames BIGINT DEFAULT '0' NOT NULL,
    visits BIGINT DEFAULT '0' NOT NULL,
    PRIMARY KEY (kiosk_id, id))""",
    "CREATE TABLE cameras (kiosk_id TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (kiosk_id, name))",
    """CREATE TABLE gaps (
    kiosk_id TEXT NOT NULL,
    id BIGINT NOT NULL,
    run_id BIGINT NOT NULL,
    camera TEXT NOT NULL,
    start FLOAT NOT NULL,
    "end" FLOAT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (kiosk_id, id))""",
    "CREATE INDEX gaps_start ON gaps (start)",
    """CREATE TABLE visits (
    kiosk_id TEXT NOT NULL,
    id BIGINT NOT NULL,
    run_id BIGINT NOT NULL,
    camera TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    start FLOAT NOT NULL,
    "end" FLOAT NOT NULL,
    dwell_s FLOAT NOT NULL,
    attention_s FLOAT NOT NULL,
    glances INTEGER NOT NULL,
    age FLOAT,
    age_std FLOAT,
    bracket TEXT NOT NULL,
    gender TEXT NOT NULL,
    gender_confidence FLOAT,
    ended TEXT DEFAULT 'left' NOT NULL,
    PRIMARY KEY (kiosk_id, id),
    UNIQUE (kiosk_id, run_id, camera, track_id))""",
    "CREATE INDEX visits_start ON visits (start)",
    "CREATE INDEX visits_kiosk_start ON visits (kiosk_id, start)",
    """CREATE TABLE minute_stats (
    kiosk_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    camera TEXT NOT NULL,
    bracket TEXT NOT NULL,
    gender TEXT NOT NULL,
    visits INTEGER NOT NULL,
    viewers INTEGER NOT NULL,
    glances INTEGER NOT NULL,
    dwell_s FLOAT NOT NULL,
    attention_s FLOAT NOT NULL,
    PRIMARY KEY (kiosk_id, minute, camera, bracket, gender))""",
    "CREATE INDEX minute_stats_minute ON minute_stats (minute)",
    """CREATE TABLE minute_hist (
    kiosk_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    camera TEXT NOT NULL,
    metric TEXT NOT NULL,
    bin INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (kiosk_id, minute, camera, metric, bin))""",
    "CREATE INDEX minute_hist_minute ON minute_hist (minute)",
    """CREATE TABLE live (
    kiosk_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    updated_at FLOAT NOT NULL,
    faces INTEGER NOT NULL,
    people INTEGER NOT NULL,
    PRIMARY KEY (kiosk_id, camera))""",
)

# the kiosk a logged-in kiosk role is: row-level security compares every row with it
_OWN_KIOSK = "(SELECT k.kiosk_id FROM kiosks k WHERE k.role = current_user)"


def _version_2() -> tuple[str, ...]:
    """Least privilege: a group role for the kiosks, confined by row-level security to each
    one's own rows (insert and update, never delete), and one for the dashboards (read)."""
    out = [
        f"""DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{KIOSK_GROUP}') THEN CREATE ROLE {KIOSK_GROUP} NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_GROUP}') THEN CREATE ROLE {READER_GROUP} NOLOGIN; END IF;
END $$""",
        f"GRANT USAGE ON SCHEMA public TO {KIOSK_GROUP}, {READER_GROUP}",
        f"GRANT SELECT ON schema_migrations, kiosks, {', '.join(DATA_TABLES)} TO {READER_GROUP}",
        f"GRANT SELECT ON schema_migrations TO {KIOSK_GROUP}",
        # ON CONFLICT DO UPDATE reads the conflicting row: SELECT, which the policy limits
        f"GRANT SELECT, INSERT, UPDATE ON {', '.join(DATA_TABLES)} TO {KIOSK_GROUP}",
        f"GRANT SELECT ON kiosks TO {KIOSK_GROUP}",
        # a kiosk reports its labels and contact; its id and role are the administrator's
        f"GRANT UPDATE (site, location, store_id, age_brackets, first_contact, last_contact, backlog) ON kiosks TO {KIOSK_GROUP}",
        "ALTER TABLE kiosks ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY kiosk_own ON kiosks TO {KIOSK_GROUP} USING (role = current_user) WITH CHECK (role = current_user)",
        f"CREATE POLICY reader_all ON kiosks FOR SELECT TO {READER_GROUP} USING (true)",
    ]
    for table in DATA_TABLES:
        out += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"CREATE POLICY kiosk_own ON {table} TO {KIOSK_GROUP} USING (kiosk_id = {_OWN_KIOSK}) WITH CHECK (kiosk_id = {_OWN_KIOSK})",
            f"CREATE POLICY reader_all ON {table} FOR SELECT TO {READER_GROUP} USING (true)",
        ]
    return tuple(out)


def _version_3() -> tuple[str, ...]:
    """Hourly rollups of the per-minute aggregates, kept by triggers: a dashboard's week
    over hundreds of kiosks reads hours (measured: docs/benchmarks.md, "Kiosk fleet at
    scale"). A trigger adds each minute row's change (new minus old: an upsert resent
    with the same values adds nothing) to its hour; it runs as the tables' owner (SECURITY
    DEFINER), so a kiosk's role needs no right on the rollups, and writes only what the
    minute row it follows, already checked by row-level security, says."""
    stats = ("visits", "viewers", "glances", "dwell_s", "attention_s")
    delta = ", ".join(f"COALESCE(NEW.{c}, 0) - COALESCE(OLD.{c}, 0)" for c in stats)
    add = ", ".join(f"{c} = h.{c} + EXCLUDED.{c}" for c in stats)
    out = [
        """CREATE TABLE hour_stats (
    kiosk_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    camera TEXT NOT NULL,
    bracket TEXT NOT NULL,
    gender TEXT NOT NULL,
    visits INTEGER NOT NULL,
    viewers INTEGER NOT NULL,
    glances INTEGER NOT NULL,
    dwell_s FLOAT NOT NULL,
    attention_s FLOAT NOT NULL,
    PRIMARY KEY (kiosk_id, hour, camera, bracket, gender))""",
        "CREATE INDEX hour_stats_hour ON hour_stats (hour)",
        """CREATE TABLE hour_hist (
    kiosk_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    camera TEXT NOT NULL,
    metric TEXT NOT NULL,
    bin INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (kiosk_id, hour, camera, metric, bin))""",
        "CREATE INDEX hour_hist_hour ON hour_hist (hour)",
        f"""INSERT INTO hour_stats SELECT kiosk_id, minute - minute % 3600, camera, bracket, gender, {', '.join(f'SUM({c})' for c in stats)}
    FROM minute_stats GROUP BY 1, 2, 3, 4, 5""",
        "INSERT INTO hour_hist SELECT kiosk_id, minute - minute % 3600, camera, metric, bin, SUM(count) FROM minute_hist GROUP BY 1, 2, 3, 4, 5",
        f"""CREATE FUNCTION roll_up_minute_stats() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE r minute_stats;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    INSERT INTO hour_stats AS h VALUES (r.kiosk_id, r.minute - r.minute % 3600, r.camera, r.bracket, r.gender, {delta})
    ON CONFLICT (kiosk_id, hour, camera, bracket, gender) DO UPDATE SET {add};
    RETURN NULL;
END $$""",
        """CREATE FUNCTION roll_up_minute_hist() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE r minute_hist;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    INSERT INTO hour_hist AS h VALUES (r.kiosk_id, r.minute - r.minute % 3600, r.camera, r.metric, r.bin, COALESCE(NEW.count, 0) - COALESCE(OLD.count, 0))
    ON CONFLICT (kiosk_id, hour, camera, metric, bin) DO UPDATE SET count = h.count + EXCLUDED.count;
    RETURN NULL;
END $$""",
        "REVOKE ALL ON FUNCTION roll_up_minute_stats(), roll_up_minute_hist() FROM PUBLIC",
        "CREATE TRIGGER roll_up AFTER INSERT OR UPDATE OR DELETE ON minute_stats FOR EACH ROW EXECUTE FUNCTION roll_up_minute_stats()",
        "CREATE TRIGGER roll_up AFTER INSERT OR UPDATE OR DELETE ON minute_hist FOR EACH ROW EXECUTE FUNCTION roll_up_minute_hist()",
        f"GRANT SELECT ON hour_stats, hour_hist TO {READER_GROUP}",
    ]
    for table in ("hour_stats", "hour_hist"):
        out += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"CREATE POLICY reader_all ON {table} FOR SELECT TO {READER_GROUP} USING (true)",
        ]
    return tuple(out)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "tables and indexes", _VERSION_1),
    Migration(2, "kiosk and reader roles, row-level security", _version_2()),
    Migration(3, "hourly rollups of the per-minute aggregates", _version_3()),
)
LATEST = MIGRATIONS[-1].version

_BOOKKEEPING = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at FLOAT NOT NULL)"""


@dataclass(frozen=True)
class MigrateResult:
    before: int
    after: int

    @property
    def applied(self) -> range:
        return range(self.before + 1, self.after + 1)


def current_version(conn: Any) -> int:
    """The store's schema version: 0 for a database with none of our tables."""
    from sqlalchemy import text

    exists = conn.execute(text("SELECT to_regclass('schema_migrations')")).scalar()
    if exists is None:
        if conn.execute(text("SELECT to_regclass('visits')")).scalar() is not None:
            raise UserError("the database has a visits table but no schema_migrations: not a fleet store, refusing to touch it")
        return 0
    return int(conn.execute(text("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")).scalar())


def migrate_connection(conn: Any, target: int = LATEST, now: float | None = None) -> MigrateResult:
    """Bring the store up to `target`, one transaction per version (conn in autocommit-free mode)."""
    from sqlalchemy import text

    now = time.time() if now is None else now
    if not 0 <= target <= LATEST:
        raise UserError(f"no schema version {target} (this release knows 1 to {LATEST})")
    with conn.begin():
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        before = current_version(conn)
        if before > LATEST:
            raise UserError(f"the central store is at schema version {before}, newer than this release's {LATEST}: upgrade this program")
        conn.execute(text(_BOOKKEEPING))
    version = before
    for m in MIGRATIONS:
        if m.version <= before or m.version > target:
            continue
        with conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
            if current_version(conn) >= m.version:  # another migrate got there first
                continue
            for statement in m.statements:
                conn.execute(text(statement))
            conn.execute(
                text("INSERT INTO schema_migrations (version, name, applied_at) VALUES (:v, :n, :t)"),
                {"v": m.version, "n": m.name, "t": now},
            )
        version = m.version
    return MigrateResult(before, max(before, version))


def migrate(url: str, target: int = LATEST) -> MigrateResult:
    """Apply the missing versions to the store at url (as its owner, or a role that may create tables and roles)."""
    with connection(url, "cannot migrate the central store") as conn:
        return migrate_connection(conn, target)
