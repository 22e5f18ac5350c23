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
* minute_stats, minute_hist: per-minute aggregates by camera, age bracket and gender,
  and per-minute dwell and attention histograms; kept for good, so reports over old
  periods still work after their visit rows are gone.
* runs: every start and stop of the kiosk, with a heartbeat, so a run that was killed
  shows as "crashed" at the next start; gaps: periods a camera was gone.
* live: one row per camera, what it sees now, for the dashboard.
* cameras: every camera id the store has seen.

Cameras: one kiosk process may serve several cameras into one store. Every visit,
checkpoint, gap, aggregate and live row carries its camera's id (DEFAULT_CAMERA for a
single-stream kiosk, and for every row of a store from before version 3); a reader
sums over cameras, or is scoped to one. The tracker's ids are per camera, so a visit
is identified by (run, camera, track).

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
store's meta table), an empty file or none at all. Anything else is refused untouched,
and so is a store of a newer version (its meta table, or from version 3 on the header's
user_version).
"""

from __future__ import annotations

import fcntl
import math
import os
import sqlite3
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import OutputError, UserError
from . import outbox
from .visits import ATTENTION_EDGES, CRASHED, DWELL_EDGES, AgeBrackets, Visit, bin_index

SCHEMA_VERSION = 4
# the camera of a single-stream kiosk, and of every row written before stores had cameras
DEFAULT_CAMERA = "default"
# SQLite's header field for the file's owner ("KIOS"): identifies a store without SQL
APPLICATION_ID = int.from_bytes(b"KIOS", "big")
SQLITE_MAGIC = b"SQLite format 3\x00"
STORE_NAME = "kiosk.sqlite3"
LOCK_NAME = "kiosk.lock"
# the live row is stale (camera gone or kiosk stopped) after this long
LIVE_FRESH_S = 5.0
CAMERA_MAX_CHARS = 64

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

# table name -> its definition; every row that a camera produced carries the camera, so
# one store serves several cameras, and the tracker's per-stream ids stay apart
TABLES: dict[str, str] = {
    "meta": "key TEXT PRIMARY KEY, value TEXT NOT NULL",
    "runs": """
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at REAL,
    stop_reason TEXT,
    source TEXT,
    pid INTEGER,
    frames INTEGER NOT NULL DEFAULT 0,
    visits INTEGER NOT NULL DEFAULT 0
""",
    "cameras": "name TEXT PRIMARY KEY",
    "gaps": """
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    camera TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    kind TEXT NOT NULL
""",
    "visits": f"""
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    camera TEXT NOT NULL,
{VISIT_COLUMNS_SQL}
    ended TEXT NOT NULL DEFAULT 'left',
    UNIQUE (run_id, camera, track_id)
""",
    "open_visits": f"""
    run_id INTEGER NOT NULL,
    camera TEXT NOT NULL,
{VISIT_COLUMNS_SQL}
    PRIMARY KEY (run_id, camera, track_id)
""",
    # the aggregates are per camera too, so that one camera's report counts its own
    # visits only; the store's totals are the sums over cameras
    "minute_stats": """
    minute INTEGER NOT NULL,
    camera TEXT NOT NULL,
    bracket TEXT NOT NULL,
    gender TEXT NOT NULL,
    visits INTEGER NOT NULL,
    viewers INTEGER NOT NULL,
    glances INTEGER NOT NULL,
    dwell_s REAL NOT NULL,
    attention_s REAL NOT NULL,
    PRIMARY KEY (minute, camera, bracket, gender)
""",
    "minute_hist": """
    minute INTEGER NOT NULL,
    camera TEXT NOT NULL,
    metric TEXT NOT NULL,
    bin INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (minute, camera, metric, bin)
""",
    # what each camera sees now, as of its last heartbeat
    "live": """
    camera TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    faces INTEGER NOT NULL,
    people INTEGER NOT NULL
""",
}
WITHOUT_ROWID = {"open_visits", "minute_stats", "minute_hist"}
INDEXES = ("CREATE INDEX IF NOT EXISTS visits_start ON visits (start)",)


def _create(table: str) -> str:
    suffix = " WITHOUT ROWID" if table in WITHOUT_ROWID else ""
    return f"CREATE TABLE IF NOT EXISTS {table} ({TABLES[table]}){suffix}"


SCHEMA = (*(_create(t) for t in TABLES), *INDEXES, outbox.DDL)

VISIT_FIELDS = "track_id, start, end, dwell_s, attention_s, glances, age, age_std, bracket, gender, gender_confidence"


def _add_camera(table: str, columns: str) -> tuple[str, ...]:
    """Rebuild a table of version 2 with its camera column (a key column: SQLite cannot add
    one in place), its rows all of the one camera a store then had."""
    return (
        f"ALTER TABLE {table} RENAME TO {table}_v2",
        _create(table),
        f"INSERT INTO {table} (camera, {columns}) SELECT '{DEFAULT_CAMERA}', {columns} FROM {table}_v2",
        f"DROP TABLE {table}_v2",
    )


# statements that bring a store of version N to N + 1 (tables that are new in the latest
# version come from SCHEMA's CREATE ... IF NOT EXISTS). The v2 -> v3 rebuilds create
# TABLES' tables: a version that changes one of them must freeze its version-3 definition
# here first, as version 1's step does for the version-2 open_visits.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE visits ADD COLUMN ended TEXT NOT NULL DEFAULT 'left'",
        f"CREATE TABLE open_visits (run_id INTEGER NOT NULL,{VISIT_COLUMNS_SQL} PRIMARY KEY (run_id, track_id)) WITHOUT ROWID",
    ),
    2: (
        *_add_camera("visits", f"id, run_id, {VISIT_FIELDS}, ended"),
        *_add_camera("open_visits", f"run_id, {VISIT_FIELDS}"),
        *_add_camera("gaps", "id, run_id, start, end, kind"),
        *_add_camera("minute_stats", "minute, bracket, gender, visits, viewers, glances, dwell_s, attention_s"),
        *_add_camera("minute_hist", "minute, metric, bin, count"),
        *_add_camera("live", "run_id, updated_at, faces, people"),
        _create("cameras"),
        f"INSERT INTO cameras (name) VALUES ('{DEFAULT_CAMERA}')",
    ),
    # version 4: the outbox, created by SCHEMA (off until a kiosk first forwards)
    3: (),
}

HISTOGRAMS = {"dwell": DWELL_EDGES, "attention": ATTENTION_EDGES}


class StoreError(OutputError):
    """The store cannot be opened or written: stop, saying why in one line."""


@dataclass(frozen=True)
class StoreOptions:
    retention_days: float | None = 90.0  # None: keep visit rows for good
    heartbeat_s: float = 0.5  # commits at least this often, so a kill loses under a second
    retention_every_s: float = 3600.0
    # record changes for a fleet's central store (see outbox.py); once on, on for good
    outbox: bool = False
    # cap on the file size (SQLite's max_page_count): writes beyond it fail as a full
    # disk does, which is how the tests exercise that path
    max_bytes: int | None = None


def check_camera(name: str) -> str:
    """A camera id as stored: the name itself; a UserError for one a report could not name."""
    if not name or name != name.strip() or len(name) > CAMERA_MAX_CHARS or not name.isprintable():
        raise UserError(f"not a usable camera id: {name[:CAMERA_MAX_CHARS]!r} (1 to {CAMERA_MAX_CHARS} printable characters, no spaces at either end)")
    return name


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
        self._opened = time.monotonic()
        # per camera: each camera's live row and checkpoints are due once per heartbeat
        # period, however often the other cameras tick
        self._last_tick: dict[str, float] = {}
        self._last_retention = self._opened
        self._cameras: set[str] = set()
        self.frames = 0  # of all cameras
        self.recording = False  # changes are recorded in the outbox (set by open)
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
            if options.outbox:
                outbox.enable(conn)
            recording = outbox.is_enabled(conn)
            if recording:
                outbox.store_id(conn)
                outbox.enqueue(conn, "runs", (r[0] for r in conn.execute("SELECT id FROM runs WHERE stopped_at IS NULL").fetchall()))
            conn.execute("UPDATE runs SET stopped_at = heartbeat_at, stop_reason = 'crashed' WHERE stopped_at IS NULL")
            # ... with these people in view: we hold the lock, so no checkpoint is live
            _close_open_visits(conn, recording)
            cur = conn.execute(
                "INSERT INTO runs (started_at, heartbeat_at, source, pid) VALUES (?, ?, ?, ?)", (now, now, source, os.getpid())
            )
            run_id = int(cur.lastrowid)
            if recording:
                outbox.enqueue(conn, "runs", [run_id])
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
        store.recording = recording
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

    def add_camera(self, camera: str) -> None:
        """Record a camera in the store's list (once; every write of a camera does it first)."""
        if camera in self._cameras:
            return
        check_camera(camera)
        def work(conn: sqlite3.Connection) -> None:
            if conn.execute("INSERT OR IGNORE INTO cameras (name) VALUES (?)", (camera,)).rowcount and self.recording:
                outbox.enqueue(conn, "cameras", [camera])

        self._transaction(work)
        self._cameras.add(camera)

    def add_visits(self, visits: Iterable[Visit], now: float | None = None, camera: str = DEFAULT_CAMERA) -> int:
        """Write a camera's visits and their aggregates; idempotent per (run, camera, track). Returns rows added."""
        batch = list(visits)
        if not batch:
            return 0
        now = time.time() if now is None else now
        self.add_camera(camera)

        def work(conn: sqlite3.Connection) -> int:
            # already written by an earlier, interrupted flush: not counted again
            added = sum(_insert_visit(conn, self.run_id, camera, v, self.recording) for v in batch)
            # the visit replaces its checkpoint
            conn.executemany(
                "DELETE FROM open_visits WHERE run_id = ? AND camera = ? AND track_id = ?",
                [(self.run_id, camera, v.track_id) for v in batch],
            )
            conn.execute(
                "UPDATE runs SET visits = visits + ?, heartbeat_at = ?, frames = ? WHERE id = ?", (added, now, self.frames, self.run_id)
            )
            self._record_run(conn)
            return added

        added = self._transaction(work)
        self.visits_written += added
        return added

    def add_gap(self, start: float, end: float, kind: str = "camera", camera: str = DEFAULT_CAMERA) -> None:
        self.add_camera(camera)

        def work(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "INSERT INTO gaps (run_id, camera, start, end, kind) VALUES (?, ?, ?, ?, ?)", (self.run_id, camera, start, end, kind)
            )
            if self.recording:
                outbox.enqueue(conn, "gaps", [cur.lastrowid])

        self._transaction(work)

    def tick(
        self,
        faces: int,
        people: int,
        now: float | None = None,
        force: bool = False,
        open_visits: Callable[[], Iterable[Visit]] | None = None,
        camera: str = DEFAULT_CAMERA,
    ) -> bool:
        """A camera's heartbeat, live row and checkpoints, committed once per heartbeat period
        of that camera; True if written. The run's heartbeat is the latest of any camera.

        open_visits, called only when the tick is due, gives the camera's visits in
        progress: they replace its checkpoints (None leaves the checkpoints as they are).
        """
        mono = time.monotonic()
        if not force and mono - self._last_tick.get(camera, self._opened) < self.options.heartbeat_s:
            return False
        now = time.time() if now is None else now
        self.add_camera(camera)
        checkpoint = None if open_visits is None else list(open_visits())

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE runs SET heartbeat_at = ?, frames = ? WHERE id = ?", (now, self.frames, self.run_id))
            self._record_run(conn)
            conn.execute(
                "INSERT OR REPLACE INTO live (camera, run_id, updated_at, faces, people) VALUES (?, ?, ?, ?, ?)",
                (camera, self.run_id, now, faces, people),
            )
            if checkpoint is not None:
                conn.execute("DELETE FROM open_visits WHERE run_id = ? AND camera = ?", (self.run_id, camera))
                conn.executemany(
                    f"INSERT INTO open_visits (run_id, camera, {VISIT_FIELDS}) VALUES ({', '.join('?' * 13)})",
                    [(self.run_id, camera, *_visit_values(v)) for v in checkpoint],
                )

        self._transaction(work)
        # the period counts from this tick: commits of visits in between carry no checkpoint
        self._last_tick[camera] = mono
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
        # a visit the central store has not yet confirmed stays until it has
        unsent = " AND id NOT IN (SELECT CAST(key AS INTEGER) FROM outbox WHERE tbl = 'visits')" if self.recording else ""
        return self._transaction(lambda conn: conn.execute(f"DELETE FROM visits WHERE end < ?{unsent}", (cutoff,)).rowcount)

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
            self._record_run(conn)
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

    def _record_run(self, conn: sqlite3.Connection) -> None:
        if self.recording:
            outbox.enqueue(conn, "runs", [self.run_id])

    def __enter__(self) -> "KioskStore":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close("error" if exc_type is not None else "stopped")


def _visit_values(v: Visit) -> tuple[Any, ...]:
    """The values of VISIT_FIELDS, in order."""
    return (v.track_id, v.start, v.end, v.dwell_s, v.attention_s, v.glances, v.age, v.age_std, v.bracket, v.gender,
            v.gender_confidence)


def _insert_visit(conn: sqlite3.Connection, run_id: int, camera: str, v: Visit, recording: bool = False) -> bool:
    """Store a camera's visit and count it in the aggregates, unless the run has it already."""
    cur = conn.execute(
        f"INSERT OR IGNORE INTO visits (run_id, camera, {VISIT_FIELDS}, ended) VALUES ({', '.join('?' * 14)})",
        (run_id, camera, *_visit_values(v), v.ended),
    )
    if cur.rowcount != 1:
        return False
    _add_aggregates(conn, camera, v)
    if recording:
        outbox.enqueue(conn, "visits", [cur.lastrowid])
        outbox.enqueue(conn, "minutes", [outbox.minute_key(minute_of(v.start), camera)])
    return True


def _close_open_visits(conn: sqlite3.Connection, recording: bool = False) -> None:
    """Turn every checkpoint left in the store into a visit ended by a crash, of the
    checkpoint's camera (within a transaction)."""
    added: dict[int, int] = {}
    for run_id, camera, *values in conn.execute(f"SELECT run_id, camera, {VISIT_FIELDS} FROM open_visits").fetchall():
        visit = Visit(*values, ended=CRASHED)
        added[run_id] = added.get(run_id, 0) + _insert_visit(conn, run_id, camera, visit, recording)
    conn.executemany("UPDATE runs SET visits = visits + ? WHERE id = ?", [(n, run_id) for run_id, n in added.items()])
    conn.execute("DELETE FROM open_visits")


def _add_aggregates(conn: sqlite3.Connection, camera: str, v: Visit) -> None:
    minute = minute_of(v.start)
    conn.execute(
        "INSERT INTO minute_stats (minute, camera, bracket, gender, visits, viewers, glances, dwell_s, attention_s)"
        " VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?) ON CONFLICT (minute, camera, bracket, gender) DO UPDATE SET"
        " visits = visits + 1, viewers = viewers + excluded.viewers, glances = glances + excluded.glances,"
        " dwell_s = dwell_s + excluded.dwell_s, attention_s = attention_s + excluded.attention_s",
        (minute, camera, v.bracket, v.gender, int(v.viewer), v.glances, v.dwell_s, v.attention_s),
    )
    bins = [("dwell", bin_index(v.dwell_s, DWELL_EDGES))]
    if v.viewer:
        bins.append(("attention", bin_index(v.attention_s, ATTENTION_EDGES)))
    for metric, b in bins:
        conn.execute(
            "INSERT INTO minute_hist (minute, camera, metric, bin, count) VALUES (?, ?, ?, ?, 1)"
            " ON CONFLICT (minute, camera, metric, bin) DO UPDATE SET count = count + 1",
            (minute, camera, metric, b),
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
        # stores from version 3 on also keep their version in the header's user_version
        version = int.from_bytes(header[60:64], "big")
        if version > SCHEMA_VERSION:
            raise _newer(path, version)
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
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)", (repr(now),))
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
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


# The reader (StoreReader and its rows) is in queries.py: one query layer for this store
# and the fleet's central one.
