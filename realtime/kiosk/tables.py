"""The kiosk tables as SQLAlchemy Core objects: what the one query layer reads, on both backends.

Two shapes of the same tables:

* local (one kiosk's SQLite store, written by store.KioskStore with its own DDL and
  migrations): the tables as store.py creates them;
* central (the fleet's PostgreSQL store, created by realtime.fleet.migrations): the
  same tables with a leading `kiosk_id` column in every key, since every kiosk's
  local ids (run, visit, gap) start at 1; plus `kiosks`, one row per kiosk with its
  labels (network > site > location > kiosk) and its last contact.

Times are seconds since the epoch as double precision on both backends, minutes
integers on a minute boundary, so that every query means the same on both.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)

# a visit's columns after its keys, shared by visits and (locally) open_visits
VISIT_VALUE_COLUMNS = (
    "track_id", "start", "end", "dwell_s", "attention_s", "glances",
    "age", "age_std", "bracket", "gender", "gender_confidence",
)


@dataclass(frozen=True)
class KioskTables:
    """One shape of the tables; `kiosks` is None for a local store, and `camera` False
    for a local store from before version 3 (which has no camera columns)."""

    metadata: MetaData
    central: bool
    camera: bool
    meta: Table | None
    runs: Table
    cameras: Table | None
    gaps: Table
    visits: Table
    minute_stats: Table
    minute_hist: Table
    live: Table
    kiosks: Table | None
    # central only: minute_stats and minute_hist summed per UTC hour, kept by triggers
    hour_stats: Table | None = None
    hour_hist: Table | None = None


def _visit_values() -> list[Column]:
    return [
        Column("track_id", Integer, nullable=False),
        Column("start", Float, nullable=False),
        Column("end", Float, nullable=False),
        Column("dwell_s", Float, nullable=False),
        Column("attention_s", Float, nullable=False),
        Column("glances", Integer, nullable=False),
        Column("age", Float),
        Column("age_std", Float),
        Column("bracket", Text, nullable=False),
        Column("gender", Text, nullable=False),
        Column("gender_confidence", Float),
    ]


def _stat_values() -> list[Column]:
    """An aggregate row's columns after its time and camera (minute_stats, hour_stats)."""
    return [
        Column("bracket", Text, nullable=False),
        Column("gender", Text, nullable=False),
        Column("visits", Integer, nullable=False),
        Column("viewers", Integer, nullable=False),
        Column("glances", Integer, nullable=False),
        Column("dwell_s", Float, nullable=False),
        Column("attention_s", Float, nullable=False),
    ]


def _hist_values() -> list[Column]:
    return [Column("metric", Text, nullable=False), Column("bin", Integer, nullable=False), Column("count", Integer, nullable=False)]


def kiosk_tables(central: bool = False, camera: bool = True) -> KioskTables:
    """The tables of a local store (central=False) or of the fleet's central store."""
    md = MetaData()
    kk = ["kiosk_id"] if central else []
    cam_key = ["camera"] if camera else []
    # BigInteger: a central store's ids and minutes outgrow 32 bits long before SQLite's do
    whole = BigInteger if central else Integer

    def k() -> list[Column]:  # a Column belongs to one table: a fresh one for each
        return [Column("kiosk_id", Text, nullable=False)] if central else []

    def cam() -> list[Column]:
        return [Column("camera", Text, nullable=False)] if camera else []

    runs = Table(
        "runs", md, *k(),
        Column("id", whole, nullable=False),
        Column("started_at", Float, nullable=False),
        Column("heartbeat_at", Float, nullable=False),
        Column("stopped_at", Float),
        Column("stop_reason", Text),
        Column("source", Text),
        *([] if central else [Column("pid", Integer)]),
        Column("frames", whole, nullable=False, server_default="0"),
        Column("visits", whole, nullable=False, server_default="0"),
        PrimaryKeyConstraint(*kk, "id"),
    )
    cameras = Table("cameras", md, *k(), Column("name", Text, nullable=False), PrimaryKeyConstraint(*kk, "name")) if camera else None
    gaps = Table(
        "gaps", md, *k(),
        Column("id", whole, nullable=False),
        Column("run_id", whole, nullable=False),
        *cam(),
        Column("start", Float, nullable=False),
        Column("end", Float, nullable=False),
        Column("kind", Text, nullable=False),
        PrimaryKeyConstraint(*kk, "id"),
    )
    visits = Table(
        "visits", md, *k(),
        Column("id", whole, nullable=False),
        Column("run_id", whole, nullable=False),
        *cam(),
        *_visit_values(),
        Column("ended", Text, nullable=False, server_default="left"),
        PrimaryKeyConstraint(*kk, "id"),
        UniqueConstraint(*kk, "run_id", *cam_key, "track_id"),
    )

    def aggregates(period: str) -> tuple[Table, Table]:
        """{period}_stats and {period}_hist: the figures and histograms of each period."""
        stats = Table(
            f"{period}_stats", md, *k(),
            Column(period, whole, nullable=False),
            *cam(),
            *_stat_values(),
            PrimaryKeyConstraint(*kk, period, *cam_key, "bracket", "gender"),
        )
        hist = Table(
            f"{period}_hist", md, *k(),
            Column(period, whole, nullable=False),
            *cam(),
            *_hist_values(),
            PrimaryKeyConstraint(*kk, period, *cam_key, "metric", "bin"),
        )
        return stats, hist

    minute_stats, minute_hist = aggregates("minute")
    live = Table(
        "live", md, *k(),
        *cam(),
        Column("run_id", whole, nullable=False),
        Column("updated_at", Float, nullable=False),
        Column("faces", Integer, nullable=False),
        Column("people", Integer, nullable=False),
        # a local store from before version 3 has one live row and no key to name here
        *([PrimaryKeyConstraint(*kk, *cam_key)] if (central or camera) else []),
    )
    meta = None if central else Table("meta", md, Column("key", Text, primary_key=True), Column("value", Text, nullable=False))
    kiosks = hour_stats = hour_hist = None
    if central:
        kiosks = Table(
            "kiosks", md,
            Column("kiosk_id", Text, primary_key=True),
            Column("site", Text, nullable=False, server_default=""),
            Column("location", Text, nullable=False, server_default=""),
            # the database role the kiosk logs in as: row-level security ties it to its rows
            Column("role", Text, nullable=False, unique=True),
            # the local store that claimed this kiosk id at its first contact: a second
            # store under the same id would overwrite the first one's rows, so it is refused
            Column("store_id", Text),
            Column("age_brackets", Text),
            Column("created_at", Float, nullable=False),
            Column("first_contact", Float),
            Column("last_contact", Float),
            Column("backlog", BigInteger),  # outbox entries still waiting at the last contact
        )
        # a week across hundreds of kiosks reads hours, not minutes (migration 3)
        hour_stats, hour_hist = aggregates("hour")
        Index("hour_stats_hour", hour_stats.c.hour)
        Index("hour_hist_hour", hour_hist.c.hour)
        # the dashboard's queries: a time range over every kiosk, or over some kiosks
        Index("minute_stats_minute", minute_stats.c.minute)
        Index("minute_hist_minute", minute_hist.c.minute)
        Index("visits_start", visits.c.start)
        Index("visits_kiosk_start", visits.c.kiosk_id, visits.c.start)
        Index("gaps_start", gaps.c.start)
        Index("kiosks_site_location", kiosks.c.site, kiosks.c.location)
    return KioskTables(md, central, camera, meta, runs, cameras, gaps, visits, minute_stats, minute_hist, live, kiosks, hour_stats, hour_hist)
