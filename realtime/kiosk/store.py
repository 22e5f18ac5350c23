"""The kiosk's store: one SQLite file in the data directory.

Privacy: the store holds only anonymous statistics. No image, crop, face embedding or
any other biometric template is ever written, and nothing identifies a person: a
visit is a start and end time, a dwell and attention time, a glance count, an
estimated age and gender with its confidence, and the tracker's per-run counter
(which restarts with every run and is not linked to any identity). A person who
returns is a new visit.

Tables:

* visits: one row per visit (see visits.py for the definitions, and `ended`: left,
  stopped or crashed); dropped after the retention period.
* open_visits: the visits in progress of the running kiosk, as of its last heartbeat
  (checkpoints, not counted anywhere); the next start turns those of a run that died
  into visits ended by "crashed".
* minute_stats, minute_hist: per-minute aggregates by age bracket and gender, and
  per-minute dwell and attention histograms; kept for good, so reports over old
  periods still work after their visit rows are gone.
* runs: every start and stop of the kiosk, with a heartbeat, so a run that was killed
  shows as "crashed" at the next start; gaps: periods the camera was gone.
* live: one row, what the camera sees now, for the dashboard.

Durability: WAL journal with synchronous=NORMAL. Visits are committed in the frame they
end in; the heartbeat, the live row and the checkpoints of the visits in progress at
least every second, in one transaction. So a kill -9 (or a power cut, up to the last
checkpointed WAL frames) loses at most the last second, of finished visits and of those
in progress alike. A checkpoint is replaced by its visit when the visit ends, or turned
into one at the next start if the run died: each visit counts in the aggregates once.
Every write is one transaction: a failure (full disk, vanished mount) rolls it back and
leaves the store as it was before, then stops the kiosk with a one-line error. A lock
file keeps a second kiosk process off the same data directory.

Ownership: before anything writes (journal mode, lock file, schema) the file named as
the store is identified read-only: a kiosk store (its application_id, or a version-1
store's meta table), an empty file or none at all. Anything else is refused untouched.
"""

from __future__ import annotations

import fcntl
import math
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import OutputError, UserError
from .visits import ATTENTION_EDGES, CRASHED, DWELL_EDGES, GENDERS, AgeBrackets, Totals, Visit, bin_index, bracket_order

SCHEMA_VERSION = 2
# SQLite's header field for the file's owner ("KIOS"): identifies a store without SQL
APPLICATION_ID = int.from_bytes(b"KIOS", "big")
SQLITE_MAGIC = b"SQLite format 3\x00"
STORE_NAME = "kiosk.sqlite3"
LOCK_NAME = "kiosk.lock"
# the live row is stale (camera gone or kiosk stopped) after this long
LIVE_FRESH_S = 5.0

# a visit's columns, shared by the visits and their checkpoints (open_visits)
VISIT_COLUMNS_SQL = """\
    track_id INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    dwell_s REAL NOT NULL,
    attention_s REAL NOT NULL,
    glances INTEGER NOT NULL,
    age REAL,
    age_std REAL,
    bracket TEXT NOT NULL,
    gender TEXT NOT NULL,
    gender_confidence REAL,"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at REAL,
    stop_reason TEXT,
    source TEXT,
    pid INTEGER,
    frames INTEGER NOT NULL DEFAULT 0,
    visits INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    kind TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS visits (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
{VISIT_COLUMNS}
    ended TEXT NOT NULL DEFAULT 'left',
    UNIQUE (run_id, track_id)
);
CREATE INDEX IF NOT EXISTS visits_start ON visits (start);
CREATE TABLE IF NOT EXISTS open_visits (
    run_id INTEGER NOT NULL,
{VISIT_COLUMNS}
    PRIMARY KEY (run_id, track_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute_stats (
    minute INTEGER NOT NULL,
    bracket TEXT NOT NULL,
    gender TEXT NOT NULL,
    visits INTEGER NOT NULL,
    viewers INTEGER NOT NULL,
    glances INTEGER NOT NULL,
    dwell_s REAL NOT NULL,
    attention_s REAL NOT NULL,
    PRIMARY KEY (minute, bracket, gender)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute_hist (
    minute INTEGER NOT NULL,
    metric TEXT NOT NULL,
    bin INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (minute, metric, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    run_id INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    faces INTEGER NOT NULL,
    people INTEGER NOT NULL
);
""".replace("{VISIT_COLUMNS}", VISIT_COLUMNS_SQL)

# statements that bring a store of version N to N + 1 (tables that are new in N + 1 come
# from SCHEMA's CREATE ... IF NOT EXISTS)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE visits ADD COLUMN ended TEXT NOT NULL DEFAULT 'left'",),
}
VISIT_FIELDS = "track_id, start, end, dwell_s, attention_s, glances, age, age_std, bracket, gender, gender_confidence"

HISTOGRAMS = {"dwell": DWELL_EDGES, "attention": ATTENTION_EDGES}


class StoreError(OutputError):
    """The store cannot be opened or written: stop, saying why in one line."""


@dataclass(frozen=True)
class StoreOptions:
    retention_days: float | None = 90.0  # None: keep visit rows for good
    heartbeat_s: float = 0.5  # commits at least this often, so a kill loses under a second
    retention_every_s: float = 3600.0
    # cap on the file size (SQLite's max_page_count): writes beyond it fail as a full
    # disk does, which is how the tests exercise that path
    max_bytes: int | None = None


def store_file(data_dir: Path) -> Path:
    return Path(data_dir) / STORE_NAME


def minute_of(t: float) -> int:
    return int(math.floor(t / 60.0)) * 60


def _reason(exc: BaseException) -> str:
    text = str(exc)
    low = text.lower()
    if "disk is full" in low or getattr(exc, "errno", None) == 28:
        return "the disk is full"
    if "readonly" in low or "read-only" in low:
        return "the store is read-only"
    if "not a database" in low or "malformed" in low:
        return "the file is not a usable SQLite database"
    if "disk i/o error" in low:
        return "disk I/O error (is the disk full, removed or failing?)"
    if "unable to open" in low:
        return "the file cannot be opened (is the folder writable?)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return text


def _connect(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    # autocommit mode: transactions are begun and ended explicitly below
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return conn


class KioskStore:
    """The writer: one per data directory and process, used from one thread."""

    def __init__(self, data_dir: Path, conn: sqlite3.Connection, lock: Any, run_id: int, options: StoreOptions) -> None:
        self.data_dir = data_dir
        self.path = store_file(data_dir)
        self.options = options
        self.run_id = run_id
        self._conn: sqlite3.Connection | None = conn
        self._lock = lock
        self._last_tick = time.monotonic()
        self._last_retention = time.monotonic()
        self.frames = 0
        self.visits_written = 0

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        options: StoreOptions = StoreOptions(),
        source: str = "",
        now: float | None = None,
        brackets: AgeBrackets = AgeBrackets(),
    ) -> "KioskStore":
        """Open or create the store, mark runs that died as crashed, and begin a run."""
        data_dir = Path(data_dir)
        now = time.time() if now is None else now
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use data dir {data_dir}: {_reason(exc)}") from None
        if not os.access(data_dir, os.W_OK | os.X_OK):
            raise StoreError(f"cannot use data dir {data_dir}: it is not writable")
        path = store_file(data_dir)
        _identify(path)  # read-only: a file that is not ours is refused untouched
        lock = _acquire_lock(data_dir)
        conn = None
        try:
            conn = _connect(path)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot use the kiosk store {path}: the file system does not support SQLite's WAL journal")
            conn.execute("PRAGMA synchronous = NORMAL")
            if options.max_bytes is not None:
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {max(1, options.max_bytes // page)}")
            _check_or_create_schema(conn, path, now)
            conn.execute("BEGIN IMMEDIATE")
            # a run with no stop was killed: it ended at its last heartbeat
            conn.execute("UPDATE runs SET stopped_at = heartbeat_at, stop_reason = 'crashed' WHERE stopped_at IS NULL")
            # ... with these people in view: we hold the lock, so no checkpoint is live
            _close_open_visits(conn)
            cur = conn.execute(
                "INSERT INTO runs (started_at, heartbeat_at, source, pid) VALUES (?, ?, ?, ?)", (now, now, source, os.getpid())
            )
            run_id = int(cur.lastrowid)
            # readers show every configured bracket, empty ones included
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('age_brackets', ?)", (",".join(map(str, brackets.edges)),)
            )
            conn.execute("COMMIT")
        except StoreError:
            _close_quietly(conn)
            lock.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            _close_quietly(conn)
            lock.close()
            raise StoreError(f"cannot use the kiosk store {store_file(data_dir)}: {_reason(exc)}") from None
        store = cls(data_dir, conn, lock, run_id, options)
        store.apply_retention(now)
        return store

    # ------------------------------------------------------------------ writing

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run work(conn) in one transaction; any failure leaves the store as it was."""
        conn = self._conn
        if conn is None:
            raise StoreError(f"the kiosk store {self.path} is closed")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot write the kiosk store {self.path}: {_reason(exc)}") from None
        return result

    def add_visits(self, visits: Iterable[Visit], now: float | None = None) -> int:
        """Write visits and their aggregates; idempotent per (run, track). Returns rows added."""
        batch = list(visits)
        if not batch:
            return 0
        now = time.time() if now is None else now

        def work(conn: sqlite3.Connection) -> int:
            # already written by an earlier, interrupted flush: not counted again
            added = sum(_insert_visit(conn, self.run_id, v) for v in batch)
            # the visit replaces its checkpoint
            conn.executemany("DELETE FROM open_visits WHERE run_id = ? AND track_id = ?", [(self.run_id, v.track_id) for v in batch])
            conn.execute(
                "UPDATE runs SET visits = visits + ?, heartbeat_at = ?, frames = ? WHERE id = ?", (added, now, self.frames, self.run_id)
            )
            return added

        added = self._transaction(work)
        self.visits_written += added
        return added

    def add_gap(self, start: float, end: float, kind: str = "camera") -> None:
        self._transaction(lambda conn: conn.execute(
            "INSERT INTO gaps (run_id, start, end, kind) VALUES (?, ?, ?, ?)", (self.run_id, start, end, kind)
        ))

    def tick(
        self,
        faces: int,
        people: int,
        now: float | None = None,
        force: bool = False,
        open_visits: Callable[[], Iterable[Visit]] | None = None,
    ) -> bool:
        """Heartbeat, live row and checkpoints, committed once per heartbeat period; True if written.

        open_visits, called only when the tick is due, gives the visits in progress: they
        replace this run's checkpoints (None leaves the checkpoints as they are).
        """
        mono = time.monotonic()
        if not force and mono - self._last_tick < self.options.heartbeat_s:
            return False
        now = time.time() if now is None else now
        checkpoint = None if open_visits is None else list(open_visits())

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE runs SET heartbeat_at = ?, frames = ? WHERE id = ?", (now, self.frames, self.run_id))
            conn.execute(
                "INSERT OR REPLACE INTO live (id, run_id, updated_at, faces, people) VALUES (1, ?, ?, ?, ?)",
                (self.run_id, now, faces, people),
            )
            if checkpoint is not None:
                conn.execute("DELETE FROM open_visits WHERE run_id = ?", (self.run_id,))
                conn.executemany(
                    f"INSERT INTO open_visits (run_id, {VISIT_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(self.run_id, *_visit_values(v)) for v in checkpoint],
                )

        self._transaction(work)
        # the period counts from this tick: commits of visits in between carry no checkpoint
        self._last_tick = mono
        if mono - self._last_retention >= self.options.retention_every_s:
            self.apply_retention(now)
        return True

    def apply_retention(self, now: float | None = None) -> int:
        """Drop visit rows older than the retention period; aggregates stay."""
        self._last_retention = time.monotonic()
        days = self.options.retention_days
        if days is None:
            return 0
        cutoff = (time.time() if now is None else now) - days * 86400.0
        return self._transaction(lambda conn: conn.execute("DELETE FROM visits WHERE end < ?", (cutoff,)).rowcount)

    def close(self, reason: str = "stopped", now: float | None = None) -> None:
        """Record the stop and close; a store that can no longer be written is just closed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        now = time.time() if now is None else now
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE runs SET stopped_at = ?, heartbeat_at = ?, stop_reason = ?, frames = ? WHERE id = ?",
                (now, now, reason, self.frames, self.run_id),
            )
            conn.execute("UPDATE live SET faces = 0, people = 0, updated_at = ? WHERE run_id = ?", (now, self.run_id))
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError):
            # the error that stopped the run was already reported; the next start marks
            # this run as crashed at its last heartbeat
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
        finally:
            _close_quietly(conn)
            self._lock.close()

    def __enter__(self) -> "KioskStore":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close("error" if exc_type is not None else "stopped")


def _visit_values(v: Visit) -> tuple[Any, ...]:
    """The values of VISIT_FIELDS, in order."""
    return (v.track_id, v.start, v.end, v.dwell_s, v.attention_s, v.glances, v.age, v.age_std, v.bracket, v.gender,
            v.gender_confidence)


def _insert_visit(conn: sqlite3.Connection, run_id: int, v: Visit) -> bool:
    """Store a visit and count it in the aggregates, unless the run has it already."""
    cur = conn.execute(
        f"INSERT OR IGNORE INTO visits (run_id, {VISIT_FIELDS}, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, *_visit_values(v), v.ended),
    )
    if cur.rowcount != 1:
        return False
    _add_aggregates(conn, v)
    return True


def _close_open_visits(conn: sqlite3.Connection) -> None:
    """Turn every checkpoint left in the store into a visit ended by a crash (within a transaction)."""
    added: dict[int, int] = {}
    for run_id, *values in conn.execute(f"SELECT run_id, {VISIT_FIELDS} FROM open_visits").fetchall():
        visit = Visit(*values, ended=CRASHED)
        added[run_id] = added.get(run_id, 0) + _insert_visit(conn, run_id, visit)
    conn.executemany("UPDATE runs SET visits = visits + ? WHERE id = ?", [(n, run_id) for run_id, n in added.items()])
    conn.execute("DELETE FROM open_visits")


def _add_aggregates(conn: sqlite3.Connection, v: Visit) -> None:
    minute = minute_of(v.start)
    conn.execute(
        "INSERT INTO minute_stats (minute, bracket, gender, visits, viewers, glances, dwell_s, attention_s)"
        " VALUES (?, ?, ?, 1, ?, ?, ?, ?) ON CONFLICT (minute, bracket, gender) DO UPDATE SET"
        " visits = visits + 1, viewers = viewers + excluded.viewers, glances = glances + excluded.glances,"
        " dwell_s = dwell_s + excluded.dwell_s, attention_s = attention_s + excluded.attention_s",
        (minute, v.bracket, v.gender, int(v.viewer), v.glances, v.dwell_s, v.attention_s),
    )
    bins = [("dwell", bin_index(v.dwell_s, DWELL_EDGES))]
    if v.viewer:
        bins.append(("attention", bin_index(v.attention_s, ATTENTION_EDGES)))
    for metric, b in bins:
        conn.execute(
            "INSERT INTO minute_hist (minute, metric, bin, count) VALUES (?, ?, ?, 1)"
            " ON CONFLICT (minute, metric, bin) DO UPDATE SET count = count + 1",
            (minute, metric, b),
        )


def _foreign(path: Path) -> StoreError:
    return StoreError(f"cannot use the kiosk store {path}: it is a SQLite database but not a kiosk store")


def _newer(path: Path, version: int) -> StoreError:
    return StoreError(f"cannot use the kiosk store {path}: it was written by a newer version (schema {version} > {SCHEMA_VERSION})")


def _stored_version(conn: sqlite3.Connection, path: Path) -> int | None:
    """The schema version of a kiosk store, None for an empty database; foreign ones raise."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    if "meta" not in tables:
        raise _foreign(path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
    except (sqlite3.Error, ValueError, TypeError):
        version = 0
    if version < 1:  # a table named meta that we did not write
        raise _foreign(path)
    if version > SCHEMA_VERSION:
        raise _newer(path, version)
    return version


def _identify(path: Path) -> None:
    """Refuse a file that is not a kiosk store, without writing anything (not even a lock).

    SQLite's header says whether a file is a database and whose (application_id); stores
    of version 1 predate the id and are recognised by their meta table, read through a
    read-only, immutable connection: a plain read-only one would leave -wal and -shm
    files beside a WAL database.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot use the kiosk store {path}: {_reason(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"cannot use the kiosk store {path}: it is not a regular file")
    if st.st_size == 0:
        return  # an empty file is an empty database: nothing in it to lose
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise StoreError(f"cannot use the kiosk store {path}: {_reason(exc)}") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise StoreError(f"cannot use the kiosk store {path}: the file is not a usable SQLite database")
    app_id = int.from_bytes(header[68:72], "big")
    if app_id == APPLICATION_ID:
        return
    if app_id != 0:
        raise _foreign(path)
    wal_mode = header[18] == 2
    wal = path.with_name(path.name + "-wal")
    # the content of a WAL database killed before its checkpoint is partly in its -wal
    # file, which only a non-immutable connection reads (a kiosk store left by kill -9)
    mode = "mode=ro" if wal_mode and wal.exists() else "mode=ro&immutable=1"
    conn = None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, timeout=5.0)
        _stored_version(conn, path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot use the kiosk store {path}: {_reason(exc)}") from None
    finally:
        _close_quietly(conn)


def _check_or_create_schema(conn: sqlite3.Connection, path: Path, now: float) -> None:
    """Create the schema, or bring a store of an earlier version up to this one."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # checked again under the lock: the file may have changed since _identify
        version = _stored_version(conn, path) or SCHEMA_VERSION
        for v in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[v]:
                conn.execute(statement)
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)", (repr(now),))
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _acquire_lock(data_dir: Path) -> Any:
    path = data_dir / LOCK_NAME
    try:
        handle = open(path, "a+")
    except OSError as exc:
        raise StoreError(f"cannot use data dir {data_dir}: {_reason(exc)}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise StoreError(f"data dir {data_dir} is in use by another kiosk process (pid {owner})") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
    except OSError as exc:
        handle.close()
        raise StoreError(f"cannot use data dir {data_dir}: {_reason(exc)}") from None
    return handle


def _close_quietly(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except sqlite3.Error:
            pass


# ---------------------------------------------------------------------- reading
#
# Readers return frozen rows; their field names are the column names the JSON API, the
# CSV exports and the report show, in the same order (dataclasses.asdict gives the dict).


@dataclass(frozen=True)
class Live:
    faces: int
    people: int
    updated_at: float | None
    fresh: bool  # the kiosk is running and saw the camera within LIVE_FRESH_S
    running: bool


@dataclass(frozen=True)
class VisitRow:
    """A stored visit (see visits.Visit), with the run it belongs to.

    Without `ended`: a reader also serves a version-1 store, which has no such column.
    """

    run_id: int
    track_id: int
    start: float
    end: float
    dwell_s: float
    attention_s: float
    glances: int
    age: float | None
    age_std: float | None
    bracket: str
    gender: str
    gender_confidence: float | None


@dataclass(frozen=True)
class RunRow:
    """One start of the kiosk; stopped_at and stop_reason are None while it runs."""

    id: int
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    stop_reason: str | None  # stopped, finished, error, crashed, ...
    source: str | None
    frames: int
    visits: int


@dataclass(frozen=True)
class GapRow:
    """A period a run was without its camera (kind "camera") or otherwise blind."""

    run_id: int
    start: float
    end: float
    kind: str


@dataclass(frozen=True)
class GenderCounts:
    """Visits of one age bracket by gender; the fields are visits.GENDERS."""

    female: int = 0
    male: int = 0
    unknown: int = 0

    @property
    def total(self) -> int:
        return self.female + self.male + self.unknown


@dataclass(frozen=True)
class TimelineBucket:
    start: int  # seconds since the epoch, on a minute
    visits: int
    viewers: int
    attention_s: float  # rounded to the millisecond
    dwell_s: float
    attention_rate: float | None  # None without visits

    @classmethod
    def of(cls, start: int, t: Totals) -> TimelineBucket:
        return cls(start, t.visits, t.viewers, round(t.attention_s, 3), round(t.dwell_s, 3), _rounded(t.attention_rate, 4))


@dataclass(frozen=True)
class HourRow:
    hour: int  # local hour of day, 0-23
    visits: int
    viewers: int
    attention_rate: float | None  # None without visits (or viewers, for attention)
    average_dwell_s: float | None
    average_attention_s: float | None

    @classmethod
    def of(cls, hour: int, t: Totals) -> HourRow:
        return cls(
            hour, t.visits, t.viewers, _rounded(t.attention_rate, 4), _rounded(t.average_dwell_s, 3), _rounded(t.average_attention_s, 3)
        )


@dataclass(frozen=True)
class DayRow:
    date: str  # local calendar day, YYYY-MM-DD
    visits: int
    viewers: int


def row_columns(row_type: type) -> tuple[str, ...]:
    """A row type's columns, in order: its field names."""
    return tuple(f.name for f in fields(row_type))


# one group's figures from minute_stats, in Totals' order
_SUMS = "COALESCE(SUM(visits), 0), COALESCE(SUM(viewers), 0), COALESCE(SUM(glances), 0), COALESCE(SUM(dwell_s), 0), COALESCE(SUM(attention_s), 0)"


def _totals(row: tuple[Any, ...]) -> Totals:
    visits, viewers, glances, dwell_s, attention_s = row
    return Totals(int(visits), int(viewers), int(glances), float(dwell_s), float(attention_s))


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class StoreReader:
    """Read-only queries for the dashboard and reports; one short connection per call.

    Times are seconds since the epoch; ranges are [start, end). Aggregates are per
    minute, so a range is effectively rounded to whole minutes of visit starts.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = store_file(self.data_dir)
        if not self.path.is_file():
            raise UserError(f"no kiosk store in {self.data_dir} (expected {self.path})")
        _identify(self.path)  # a foreign file: one clear line, and no -wal or -shm beside it

    def _iter_rows(self, sql: str, params: tuple = (), batch: int = 1000) -> Iterator[tuple[Any, ...]]:
        """The query's rows, fetched batch by batch: a long range is never all in memory."""
        try:
            conn = _connect(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the kiosk store {self.path}: {_reason(exc)}") from None
        try:
            conn.execute("PRAGMA query_only = ON")
            cur = conn.execute(sql, params)
            while rows := cur.fetchmany(batch):
                yield from rows
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the kiosk store {self.path}: {_reason(exc)}") from None
        finally:
            conn.close()

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple[Any, ...]]:
        return list(self._iter_rows(sql, params))

    def _per_minute(self, select: str, start: float, end: float, group: str = "", params: tuple = ()) -> list[tuple[Any, ...]]:
        """SELECT select FROM minute_stats over the minutes of [start, end), then group (GROUP BY ...)."""
        return self._rows(
            f"SELECT {select} FROM minute_stats WHERE minute >= ? AND minute < ? {group}",
            (*params, minute_of(start), _minute_end(end)),
        )

    def totals(self, start: float, end: float) -> Totals:
        return _totals(self._per_minute(_SUMS, start, end)[0])

    def brackets(self, start: float, end: float) -> dict[str, GenderCounts]:
        """Visits by age bracket and gender, every configured bracket included, in age order."""
        rows = self._per_minute("bracket, gender, SUM(visits)", start, end, "GROUP BY bracket, gender")
        counts: dict[str, dict[str, int]] = {label: {} for label in self.configured_brackets().labels}
        for bracket, gender, n in rows:
            counts.setdefault(bracket, {})[gender] = int(n)
        # the writer's genders are GENDERS (see visits.make_visit)
        typed = {b: GenderCounts(**{g: c.get(g, 0) for g in GENDERS}) for b, c in counts.items()}
        return dict(sorted(typed.items(), key=lambda kv: bracket_order(kv[0])))

    def timeline(self, start: float, end: float, bucket_s: int) -> list[TimelineBucket]:
        """Visits, viewers and attention per bucket from start (every bucket, zeros included)."""
        first = minute_of(start)
        rows = self._per_minute(f"(minute - ?) / ? AS b, {_SUMS}", start, end, "GROUP BY b", (first, bucket_s))
        by_bucket = {int(b): _totals(sums) for b, *sums in rows}
        n = max(0, math.ceil((end - first) / bucket_s))
        return [TimelineBucket.of(first + i * bucket_s, by_bucket.get(i, Totals())) for i in range(n)]

    def hourly_profile(self, start: float, end: float) -> list[HourRow]:
        """Visits and viewers by local hour of day (0-23), summed over the range."""
        hour = "CAST(strftime('%H', minute, 'unixepoch', 'localtime') AS INTEGER) AS h"
        by_hour = {int(h): _totals(sums) for h, *sums in self._per_minute(f"{hour}, {_SUMS}", start, end, "GROUP BY h")}
        return [HourRow.of(h, by_hour.get(h, Totals())) for h in range(24)]

    def daily(self, start: float, end: float) -> list[DayRow]:
        """Visits and viewers per local calendar day with any data."""
        rows = self._per_minute(
            "strftime('%Y-%m-%d', minute, 'unixepoch', 'localtime') AS d, SUM(visits), SUM(viewers)", start, end, "GROUP BY d ORDER BY d"
        )
        return [DayRow(d, int(visits), int(viewers)) for d, visits, viewers in rows]

    def histogram(self, metric: str, start: float, end: float) -> list[int]:
        edges = HISTOGRAMS[metric]
        counts = [0] * (len(edges) + 1)
        for b, n in self._rows(
            "SELECT bin, SUM(count) FROM minute_hist WHERE metric = ? AND minute >= ? AND minute < ? GROUP BY bin",
            (metric, minute_of(start), _minute_end(end)),
        ):
            if 0 <= int(b) < len(counts):
                counts[int(b)] = int(n)
        return counts

    def visits(self, start: float, end: float) -> list[VisitRow]:
        """Visit rows that started in the range (only those still within retention)."""
        return list(self.iter_visits(start, end))

    def iter_visits(self, start: float, end: float, batch: int = 1000) -> Iterator[VisitRow]:
        """Like visits(), without holding the whole range in memory (CSV export)."""
        rows = self._iter_rows(
            f"SELECT {', '.join(row_columns(VisitRow))} FROM visits WHERE start >= ? AND start < ? ORDER BY start, id", (start, end), batch
        )
        return (VisitRow(*r) for r in rows)

    def runs(self, start: float, end: float) -> list[RunRow]:
        """Runs that overlap the range, a running one up to its last heartbeat."""
        return [RunRow(*r) for r in self._rows(
            f"SELECT {', '.join(row_columns(RunRow))} FROM runs WHERE started_at < ? AND COALESCE(stopped_at, heartbeat_at) >= ? ORDER BY id",
            (end, start),
        )]

    def gaps(self, start: float, end: float) -> list[GapRow]:
        return [GapRow(*r) for r in self._rows(
            f"SELECT {', '.join(row_columns(GapRow))} FROM gaps WHERE start < ? AND end >= ? ORDER BY start", (end, start)
        )]

    def live(self, now: float | None = None) -> Live:
        now = time.time() if now is None else now
        rows = self._rows(
            "SELECT l.faces, l.people, l.updated_at, r.stopped_at FROM live l JOIN runs r ON r.id = l.run_id WHERE l.id = 1"
        )
        if not rows:
            return Live(0, 0, None, False, False)
        faces, people, updated, stopped = rows[0]
        running = stopped is None
        fresh = running and now - float(updated) <= LIVE_FRESH_S
        return Live(int(faces) if fresh else 0, int(people) if fresh else 0, float(updated), fresh, running)

    def configured_brackets(self) -> AgeBrackets:
        rows = self._rows("SELECT value FROM meta WHERE key = 'age_brackets'")
        try:
            return AgeBrackets.parse(rows[0][0]) if rows else AgeBrackets()
        except ValueError:
            return AgeBrackets()

    def first_minute(self) -> float | None:
        r = self._rows("SELECT MIN(minute) FROM minute_stats")[0][0]
        return None if r is None else float(r)


def _minute_end(end: float) -> int:
    """The first minute not in [.., end): a partial last minute counts in."""
    return int(math.ceil(end / 60.0)) * 60
