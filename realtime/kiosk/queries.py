"""The read side of the kiosk's figures: one query layer for a kiosk's own SQLite store
and for the fleet's central PostgreSQL store.

    StoreReader("/var/lib/kiosk")                                   a kiosk's local store
    StoreReader("postgresql://reader@db.example/fleet", site="north")   the central store

Both backends have the same tables (tables.py); the central one adds a `kiosk_id` to
every key and a `kiosks` table with each kiosk's site, location and last contact. The
queries are SQLAlchemy Core expressions, so they render on SQLite and PostgreSQL alike;
anything a backend does its own way (local time) is done in Python.

Local: the file is identified read-only first (a foreign file is refused without a -wal
or -shm left beside it), and every query runs on a fresh connection with `query_only`,
closed after it (NullPool): a reader never writes, locks or keeps anything open. A store
from before version 3 has no camera columns: it reads as the one camera DEFAULT_CAMERA.

Central: one pooled engine per URL (pre-pinged), read-only transactions; connection,
login and schema failures are a StoreError of one line that shows the URL without its
password. site=, location= and kiosk= narrow every figure to the kiosks they name.

Readers return frozen rows whose field names are the column names the JSON API, the CSV
exports and the report show, in the same order (dataclasses.asdict gives the dict).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import ColumnElement, Engine, Select, Table, Text, create_engine, func, literal, select, union_all
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from ..errors import UserError
from ..fleet.urls import STORE_ENV, central_url, is_store_url, shown_url
from ..fleet.urls import create_engine as create_central_engine
from ..fleet.urls import reason as central_reason
from .store import (
    CAMERA_MAX_CHARS,
    DEFAULT_CAMERA,
    HISTOGRAMS,
    LIVE_FRESH_S,
    SCHEMA_VERSION,
    StoreError,
    _connect,
    _identify,
    _reason,
    minute_of,
    store_file,
)
from .tables import KioskTables, kiosk_tables
from .visits import GENDERS, AgeBrackets, Totals, bracket_order

# kiosks forward every 10-30 s: a central live row is stale after this long
CENTRAL_LIVE_FRESH_S = 120.0
# a kiosk not heard from for this long is marked quiet
QUIET_AFTER_S = 900.0
# every real time zone offset (and every daylight saving step) is a multiple of 15
# minutes: quarter hours of UTC are whole in every local time, so SQL groups by them and
# Python maps them to local hours and days, the same on every backend
QUARTER_S = 900
FETCH_BATCH = 1000


# ---------------------------------------------------------------------- rows


@dataclass(frozen=True)
class CameraLive:
    camera: str
    faces: int
    people: int
    updated_at: float
    fresh: bool  # the kiosk is running and saw this camera recently
    kiosk_id: str | None = None  # the camera's kiosk, in a central store


@dataclass(frozen=True)
class Live:
    """What the cameras of the latest run see now: faces and people summed over the fresh ones."""

    faces: int
    people: int
    updated_at: float | None
    fresh: bool  # the kiosk is running and saw a camera recently
    running: bool
    cameras: tuple[CameraLive, ...] = ()


@dataclass(frozen=True)
class VisitRow:
    """A stored visit (see visits.Visit), with the run and camera it belongs to.

    Without `ended`: a reader also serves a version-1 store, which has no such column.
    """

    run_id: int
    camera: str
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
class CentralVisitRow(VisitRow):
    """A visit of the central store: the kiosk's local visit, and the kiosk it is of
    (run and track ids are the kiosk's own)."""

    kiosk_id: str


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
    """A period a run was without a camera (kind "camera") or otherwise blind."""

    run_id: int
    camera: str
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


@dataclass(frozen=True)
class SiteRow:
    """One site's figures over a period (central store): the per-site comparison."""

    site: str
    kiosks: int  # kiosks of the site in the reader's scope
    visits: int
    viewers: int
    attention_rate: float | None
    average_dwell_s: float | None

    @classmethod
    def of(cls, site: str, kiosks: int, t: Totals) -> SiteRow:
        return cls(site, kiosks, t.visits, t.viewers, _rounded(t.attention_rate, 4), _rounded(t.average_dwell_s, 3))


@dataclass(frozen=True)
class KioskRow:
    """One kiosk of a central store, as of its last contact."""

    kiosk_id: str
    site: str
    location: str
    last_contact: float | None
    backlog: int | None  # outbox entries still waiting at the last contact
    quiet: bool  # never heard from, or not for QUIET_AFTER_S


def row_columns(row_type: type) -> tuple[str, ...]:
    """A row type's columns, in order: its field names."""
    return tuple(f.name for f in fields(row_type))


def _totals(row: Iterable[Any]) -> Totals:
    visits, viewers, glances, dwell_s, attention_s = row
    return Totals(int(visits or 0), int(viewers or 0), int(glances or 0), float(dwell_s or 0.0), float(attention_s or 0.0))


def _plus(a: Totals, b: Totals) -> Totals:
    return Totals(a.visits + b.visits, a.viewers + b.viewers, a.glances + b.glances, a.dwell_s + b.dwell_s, a.attention_s + b.attention_s)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _minute_end(end: float) -> int:
    """The first minute not in [.., end): a partial last minute counts in."""
    return int(math.ceil(end / 60.0)) * 60


def _camera_live(camera: str, faces: int, people: int, updated_at: float, fresh: bool, kiosk_id: str | None = None) -> CameraLive:
    # a camera gone or a kiosk stopped shows no one, never a stale count
    return CameraLive(camera, faces if fresh else 0, people if fresh else 0, updated_at, fresh, kiosk_id)


# ---------------------------------------------------------------------- backends


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _central_engine(url: URL) -> Engine:
    """One pool per URL for the process: a dashboard makes a reader per request."""
    key = url.render_as_string(hide_password=False)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            # read-only transactions: a reader never writes, whatever its role may
            engine = _ENGINES[key] = create_central_engine(url, application="agegender-reader", readonly=True, pool_size=4)
    return engine


def _local_engine(path: Path) -> Engine:
    """Connections as the writer makes them, made read-only, and closed after each use."""

    def connect() -> Any:
        conn = _connect(path)
        conn.execute("PRAGMA query_only = ON")
        return conn

    return create_engine("sqlite://", creator=connect, poolclass=NullPool)


# ---------------------------------------------------------------------- the reader


class StoreReader:
    """Read-only queries for the dashboard and reports.

    `store` is a data dir (a kiosk's local store) or a PostgreSQL URL (the fleet's central
    store). Times are seconds since the epoch; ranges are [start, end). Aggregates are
    per minute, so a range is effectively rounded to whole minutes of visit starts. With
    a camera, every figure is that camera's (runs, which all cameras share, excepted);
    without, the sums over all cameras. With site, location or kiosk (central only),
    every figure is that of the kiosks they name.
    """

    def __init__(
        self,
        store: str | Path,
        camera: str | None = None,
        *,
        site: str | None = None,
        location: str | None = None,
        kiosk: str | None = None,
    ) -> None:
        self.camera = camera
        self.site, self.location, self.kiosk = site, location, kiosk
        self.central = is_store_url(store)
        self.data_dir: Path | None = None
        self.path: Path | None = None
        self.url: str | None = None  # the central store's URL, without its password
        self.schema_version: int | None = None  # a local store's
        if self.central:
            self._open_central(str(store))
        else:
            if site is not None or location is not None or kiosk is not None:
                raise UserError("site, location and kiosk narrow a central store (--store URL); a kiosk's own store is one kiosk")
            self._open_local(Path(store))
        if camera is not None and camera not in self.cameras():
            known = ", ".join(self.cameras()) or "none yet"
            raise UserError(f"no camera {camera[:CAMERA_MAX_CHARS]!r} in {self._label} (cameras: {known})")

    # ------------------------------------------------------------------ opening

    def _open_local(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = store_file(data_dir)
        self._label = f"the kiosk store {self.path}"
        if not self.path.is_file():
            raise UserError(f"no kiosk store in {data_dir} (expected {self.path})")
        _identify(self.path)  # a foreign file: one clear line, and no -wal or -shm beside it
        self._engine = _local_engine(self.path)
        meta = kiosk_tables().meta
        assert meta is not None
        rows = self._all(select(meta.c.value).where(meta.c.key == "schema_version"))
        self.schema_version = int(rows[0][0]) if rows else SCHEMA_VERSION
        # stores from before version 3 have no camera columns: one camera, DEFAULT_CAMERA
        self.t: KioskTables = kiosk_tables(central=False, camera=self.schema_version >= 3)
        self._kiosk_where: list[ColumnElement[bool]] = []

    def _open_central(self, text: str) -> None:
        url = central_url(text)
        self.url = shown_url(url)
        self._label = f"the central store {self.url}"
        self._engine = _central_engine(url)
        self.t = kiosk_tables(central=True)
        k = self.t.kiosks
        assert k is not None
        # the kiosks the filters name, each checked against those the others leave
        self._kiosk_where = []
        for value, column, what in ((self.site, k.c.site, "site"), (self.location, k.c.location, "location"), (self.kiosk, k.c.kiosk_id, "kiosk")):
            if value is None:
                continue
            known = [str(r[0]) for r in self._all(select(column).distinct().where(*self._kiosk_where).order_by(column))]
            if value not in known:
                shown = ", ".join(known[:50]) + (", ..." if len(known) > 50 else "") or "none yet"
                raise UserError(f"no {what} {value[:CAMERA_MAX_CHARS]!r} in {self._label} ({what}s: {shown})")
            self._kiosk_where.append(column == value)
        if not self._kiosk_where:
            self._all(select(k.c.kiosk_id).limit(1))  # reachable, and a fleet store: say so now, not mid-report

    # ------------------------------------------------------------------ running queries

    def _iter(self, query: Select, batch: int = FETCH_BATCH) -> Iterator[Any]:
        """The query's rows, fetched batch by batch: a long range is never all in memory."""
        try:
            with self._engine.connect() as conn:
                # PostgreSQL: a server-side cursor; SQLite's cursor fetches as asked already
                result = conn.execution_options(stream_results=self.central).execute(query)
                for rows in result.partitions(batch):
                    yield from rows
        except SQLAlchemyError as exc:
            raise self._failure(exc) from None

    def _all(self, query: Select) -> list[Any]:
        return list(self._iter(query))

    def _failure(self, exc: SQLAlchemyError) -> StoreError:
        orig = getattr(exc, "orig", None) or exc.__cause__ or exc
        reason = central_reason(orig) if self.central else _reason(orig)
        return StoreError(f"cannot read {self._label}: {reason}")

    # ------------------------------------------------------------------ conditions

    def _camera_of(self, table: Table) -> ColumnElement[Any]:
        """A table's camera column, or what stands for it in a store that has none."""
        return table.c.camera if "camera" in table.c else literal(DEFAULT_CAMERA, Text)

    def _scope(self, table: Table, *, camera: bool = True) -> list[ColumnElement[bool]]:
        """The conditions that narrow a table to the reader's kiosks and camera."""
        conds: list[ColumnElement[bool]] = []
        if self._kiosk_where:
            k = self.t.kiosks
            assert k is not None
            conds.append(table.c.kiosk_id.in_(select(k.c.kiosk_id).where(*self._kiosk_where)))
        # a store without camera columns holds DEFAULT_CAMERA's rows only, and the camera
        # was checked against cameras() at the start
        if camera and self.camera is not None and "camera" in table.c:
            conds.append(table.c.camera == self.camera)
        return conds

    def _minutes(self, table: Table, start: float, end: float) -> list[ColumnElement[bool]]:
        return [table.c.minute >= minute_of(start), table.c.minute < _minute_end(end), *self._scope(table)]

    def _aggregates(self, start: float, end: float, hist: bool = False, align_s: int = 3600) -> tuple[Any, list[ColumnElement[bool]]]:
        """Where [start, end)'s per-minute aggregates are read from, and the conditions to
        put on it: minute_stats (minute_hist with hist) in the reader's scope.

        A central store reads the whole UTC hours inside the range from its hourly rollups
        (migration 3), minutes only at the edges: a week over hundreds of kiosks is then
        hundreds of thousands of rows, not millions. Each hour row's time is its hour's
        start, so a caller that groups by time may only use this with buckets that are
        whole hours on hour boundaries (align_s = 0 keeps to minutes).
        """
        minutes = self.t.minute_hist if hist else self.t.minute_stats
        hours = self.t.hour_hist if hist else self.t.hour_stats
        lo, hi = minute_of(start), _minute_end(end)
        first_hour, last_hour = -(-lo // 3600) * 3600, hi // 3600 * 3600
        if hours is None or align_s <= 0 or first_hour >= last_hour:
            return minutes, self._minutes(minutes, start, end)
        values = [c.name for c in minutes.columns if c.name not in ("kiosk_id", "minute")]
        edges = select(minutes.c.minute, *(minutes.c[c] for c in values)).where(
            ((minutes.c.minute >= lo) & (minutes.c.minute < first_hour)) | ((minutes.c.minute >= last_hour) & (minutes.c.minute < hi)),
            *self._scope(minutes),
        )
        middle = select(hours.c.hour.label("minute"), *(hours.c[c] for c in values)).where(
            hours.c.hour >= first_hour, hours.c.hour < last_hour, *self._scope(hours)
        )
        return union_all(edges, middle).subquery(minutes.name), []

    def _sums(self, ms: Any) -> list[ColumnElement[Any]]:
        """One group's figures from minute_stats, in Totals' order."""
        return [func.coalesce(func.sum(ms.c[c]), 0) for c in ("visits", "viewers", "glances", "dwell_s", "attention_s")]

    # ------------------------------------------------------------------ figures

    def cameras(self) -> tuple[str, ...]:
        """Every camera the store has seen (central: of the kiosks in scope), by name."""
        cams = self.t.cameras
        if cams is None:
            return (DEFAULT_CAMERA,)
        query = select(cams.c.name).where(*self._scope(cams)).distinct().order_by(cams.c.name)
        return tuple(str(r[0]) for r in self._all(query))

    def totals(self, start: float, end: float) -> Totals:
        ms, where = self._aggregates(start, end)
        return _totals(self._all(select(*self._sums(ms)).where(*where))[0])

    def camera_totals(self, start: float, end: float) -> dict[str, Totals]:
        """Totals per camera with visits in the range (the reader's camera only, if it has one)."""
        ms, where = self._aggregates(start, end)
        c = self._camera_of(ms).label("c")
        rows = self._all(select(c, *self._sums(ms)).where(*where).group_by(c).order_by(c))
        return {str(name): _totals(sums) for name, *sums in rows}

    def brackets(self, start: float, end: float) -> dict[str, GenderCounts]:
        """Visits by age bracket and gender, every configured bracket included, in age order."""
        ms, where = self._aggregates(start, end)
        query = select(ms.c.bracket, ms.c.gender, func.sum(ms.c.visits)).where(*where).group_by(ms.c.bracket, ms.c.gender)
        counts: dict[str, dict[str, int]] = {label: {} for label in self.configured_brackets().labels}
        for bracket, gender, n in self._all(query):
            counts.setdefault(bracket, {})[gender] = int(n)
        # the writer's genders are GENDERS (see visits.make_visit)
        typed = {b: GenderCounts(**{g: c.get(g, 0) for g in GENDERS}) for b, c in counts.items()}
        return dict(sorted(typed.items(), key=lambda kv: bracket_order(kv[0])))

    def timeline(self, start: float, end: float, bucket_s: int) -> list[TimelineBucket]:
        """Visits, viewers and attention per bucket from start (every bucket, zeros included)."""
        first = minute_of(start)
        bucket_s = int(bucket_s)
        # hour rows fit buckets of whole hours that start on the hour
        ms, where = self._aggregates(start, end, align_s=3600 if bucket_s % 3600 == 0 and first % 3600 == 0 else 0)
        # integers on both backends: // renders as integer division
        b = ((ms.c.minute - first) // bucket_s).label("b")
        rows = self._all(select(b, *self._sums(ms)).where(*where).group_by(b))
        by_bucket = {int(i): _totals(sums) for i, *sums in rows}
        n = max(0, math.ceil((end - first) / bucket_s))
        return [TimelineBucket.of(first + i * bucket_s, by_bucket.get(i, Totals())) for i in range(n)]

    def _quarters(self, start: float, end: float) -> Iterator[tuple[datetime, Totals]]:
        """Each UTC quarter hour with data in the range, as local time, and its figures."""
        ms = self.t.minute_stats
        q = (ms.c.minute // QUARTER_S).label("q")
        for quarter, *sums in self._all(select(q, *self._sums(ms)).where(*self._minutes(ms, start, end)).group_by(q)):
            yield datetime.fromtimestamp(int(quarter) * QUARTER_S), _totals(sums)

    def hourly_profile(self, start: float, end: float) -> list[HourRow]:
        """Visits and viewers by local hour of day (0-23), summed over the range."""
        by_hour: dict[int, Totals] = {}
        for local, t in self._quarters(start, end):
            by_hour[local.hour] = _plus(by_hour.get(local.hour, Totals()), t)
        return [HourRow.of(h, by_hour.get(h, Totals())) for h in range(24)]

    def daily(self, start: float, end: float) -> list[DayRow]:
        """Visits and viewers per local calendar day with any data."""
        by_day: dict[str, Totals] = {}
        for local, t in self._quarters(start, end):
            day = local.strftime("%Y-%m-%d")
            by_day[day] = _plus(by_day.get(day, Totals()), t)
        return [DayRow(d, t.visits, t.viewers) for d, t in sorted(by_day.items())]

    def histogram(self, metric: str, start: float, end: float) -> list[int]:
        edges = HISTOGRAMS[metric]
        counts = [0] * (len(edges) + 1)
        mh, where = self._aggregates(start, end, hist=True)
        query = select(mh.c.bin, func.sum(mh.c.count)).where(mh.c.metric == metric, *where).group_by(mh.c.bin)
        for b, n in self._all(query):
            if 0 <= int(b) < len(counts):
                counts[int(b)] = int(n)
        return counts

    def visits(self, start: float, end: float) -> list[VisitRow]:
        """Visit rows that started in the range (only those still within retention)."""
        return list(self.iter_visits(start, end))

    @property
    def visit_row(self) -> type[VisitRow]:
        """The type of this store's visit rows (their columns: row_columns of it)."""
        return CentralVisitRow if self.central else VisitRow

    def iter_visits(self, start: float, end: float, batch: int = FETCH_BATCH) -> Iterator[VisitRow]:
        """Like visits(), without holding the whole range in memory (CSV export).
        A central store's rows are CentralVisitRow: with their kiosk."""
        v = self.t.visits
        row = self.visit_row
        columns = [self._camera_of(v).label("camera") if c == "camera" else v.c[c] for c in row_columns(row)]
        order = [v.c.start, *([v.c.kiosk_id] if self.central else []), v.c.id]
        query = select(*columns).where(v.c.start >= start, v.c.start < end, *self._scope(v)).order_by(*order)
        return (row(*r) for r in self._iter(query, batch))

    def runs(self, start: float, end: float) -> list[RunRow]:
        """Runs that overlap the range, a running one up to its last heartbeat."""
        r = self.t.runs
        order = [*([r.c.kiosk_id] if self.central else []), r.c.id]
        query = (
            select(*(r.c[c] for c in row_columns(RunRow)))
            .where(r.c.started_at < end, func.coalesce(r.c.stopped_at, r.c.heartbeat_at) >= start, *self._scope(r, camera=False))
            .order_by(*order)
        )
        return [RunRow(*row) for row in self._all(query)]

    def gaps(self, start: float, end: float) -> list[GapRow]:
        g = self.t.gaps
        columns = [self._camera_of(g).label("camera") if c == "camera" else g.c[c] for c in row_columns(GapRow)]
        query = select(*columns).where(g.c.start < end, g.c.end >= start, *self._scope(g)).order_by(g.c.start)
        return [GapRow(*row) for row in self._all(query)]

    def live(self, now: float | None = None) -> Live:
        """What the cameras see now: locally, those of the latest run that wrote a live row
        (a stopped run's read as stopped); centrally, those of each kiosk in scope."""
        now = time.time() if now is None else now
        lv, r = self.t.live, self.t.runs
        latest = lv.alias("latest")
        c = self._camera_of(lv).label("c")
        if self.central:
            # each kiosk's latest run; its rows are fresh while the run goes on and forwards
            newest = select(func.max(latest.c.run_id)).where(latest.c.kiosk_id == lv.c.kiosk_id).scalar_subquery()
            joined = lv.join(r, (r.c.kiosk_id == lv.c.kiosk_id) & (r.c.id == lv.c.run_id))
            query = select(c, lv.c.faces, lv.c.people, lv.c.updated_at, r.c.stopped_at, lv.c.kiosk_id).select_from(joined)
            query = query.where(lv.c.run_id == newest, *self._scope(lv)).order_by(lv.c.kiosk_id, c)
            fresh_s = CENTRAL_LIVE_FRESH_S
        else:
            newest = select(func.max(latest.c.run_id)).scalar_subquery()
            joined = lv.join(r, r.c.id == lv.c.run_id)
            query = select(c, lv.c.faces, lv.c.people, lv.c.updated_at, r.c.stopped_at, literal(None, Text)).select_from(joined)
            query = query.where(lv.c.run_id == newest, *self._scope(lv)).order_by(c)
            fresh_s = LIVE_FRESH_S
        rows = self._all(query)
        if not rows:
            return Live(0, 0, None, False, False)
        running = any(row[4] is None for row in rows)
        cameras = tuple(
            _camera_live(str(cam), int(f), int(p), float(u), stopped is None and now - float(u) <= fresh_s, kiosk)
            for cam, f, p, u, stopped, kiosk in rows
        )
        return Live(
            sum(x.faces for x in cameras),
            sum(x.people for x in cameras),
            max(x.updated_at for x in cameras),
            any(x.fresh for x in cameras),
            running,
            cameras,
        )

    def configured_brackets(self) -> AgeBrackets:
        if self.central:
            k = self.t.kiosks
            assert k is not None
            query = select(k.c.age_brackets).where(k.c.age_brackets.is_not(None), *self._kiosk_where).order_by(k.c.kiosk_id).limit(1)
        else:
            meta = self.t.meta
            assert meta is not None
            query = select(meta.c.value).where(meta.c.key == "age_brackets")
        rows = self._all(query)
        try:
            return AgeBrackets.parse(rows[0][0]) if rows else AgeBrackets()
        except ValueError:
            return AgeBrackets()

    def first_minute(self) -> float | None:
        ms = self.t.minute_stats
        r = self._all(select(func.min(ms.c.minute)).where(*self._scope(ms)))[0][0]
        return None if r is None else float(r)

    # ------------------------------------------------------------------ the fleet

    def sites(self, start: float, end: float) -> list[SiteRow]:
        """Per-site figures over the range, every site in scope (central; [] locally)."""
        k = self.t.kiosks
        if k is None:
            return []
        ms = self.t.minute_stats
        counts = self._all(select(k.c.site, func.count()).where(*self._kiosk_where).group_by(k.c.site))
        joined = ms.join(k, k.c.kiosk_id == ms.c.kiosk_id)
        query = select(k.c.site, *self._sums(ms)).select_from(joined).where(*self._minutes(ms, start, end), *self._kiosk_where).group_by(k.c.site)
        by_site = {str(site): _totals(sums) for site, *sums in self._all(query)}
        return [SiteRow.of(str(site), int(n), by_site.get(str(site), Totals())) for site, n in sorted(counts, key=lambda r: str(r[0]))]

    def kiosks(self, now: float | None = None) -> list[KioskRow]:
        """The kiosks in scope with their last contact, quiet ones marked (central; [] locally)."""
        k = self.t.kiosks
        if k is None:
            return []
        now = time.time() if now is None else now
        query = (
            select(k.c.kiosk_id, k.c.site, k.c.location, k.c.last_contact, k.c.backlog)
            .where(*self._kiosk_where)
            .order_by(k.c.site, k.c.location, k.c.kiosk_id)
        )
        return [
            KioskRow(str(kid), str(site), str(loc), None if last is None else float(last), None if backlog is None else int(backlog),
                     last is None or now - float(last) > QUIET_AFTER_S)
            for kid, site, loc, last, backlog in self._all(query)
        ]

    @property
    def label(self) -> str:
        """The store as messages name it (a central one without its password)."""
        return self._label


READER_NAMES = (
    "CENTRAL_LIVE_FRESH_S", "QUIET_AFTER_S", "CameraLive", "CentralVisitRow", "DayRow", "GapRow", "GenderCounts", "HourRow", "KioskRow",
    "Live", "RunRow", "SiteRow", "StoreReader", "TimelineBucket", "VisitRow", "row_columns",
)

__all__ = [  # noqa: PLE0604 - READER_NAMES are strings
    *READER_NAMES, "STORE_ENV", "central_url", "is_store_url", "shown_url",
]
