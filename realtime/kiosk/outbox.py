"""The store's outbox: which rows have changed since the central store last took them.

A kiosk that forwards to a fleet's central store (realtime.fleet) keeps, in its own
SQLite store, one outbox entry per changed row: (table, key), written in the same
transaction as the change, so an entry exists exactly when a change has not yet been
confirmed by the central commit. A row that changes again while its entry waits gets a
new, later entry (INSERT OR REPLACE renumbers it): the forwarder deletes only the
entries it read, so a change made while a batch was in flight is sent with the next.
Rows are sent whole, as they are at send time, and the central store upserts them: a
resend (after a crash between the central commit and the deletion here) changes
nothing.

Keys: runs, gaps and visits by their id; cameras by name; "minutes" by [minute, camera],
standing for every minute_stats and minute_hist row of that camera's minute. The live
rows are not in the outbox: each batch takes them as they are.

The outbox is off until a kiosk first forwards; then every earlier row is entered once
(backfill), and it stays on for the store, so a later run without forwarding still
records what the next forwarding run must send.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

DDL = "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, key TEXT NOT NULL, UNIQUE (tbl, key))"
TABLES = ("runs", "cameras", "gaps", "visits", "minutes")

RUN_COLUMNS = ("id", "started_at", "heartbeat_at", "stopped_at", "stop_reason", "source", "frames", "visits")
GAP_COLUMNS = ("id", "run_id", "camera", "start", "end", "kind")
VISIT_COLUMNS = (
    "id", "run_id", "camera", "track_id", "start", "end", "dwell_s", "attention_s", "glances",
    "age", "age_std", "bracket", "gender", "gender_confidence", "ended",
)
STAT_COLUMNS = ("minute", "camera", "bracket", "gender", "visits", "viewers", "glances", "dwell_s", "attention_s")
HIST_COLUMNS = ("minute", "camera", "metric", "bin", "count")
LIVE_COLUMNS = ("camera", "run_id", "updated_at", "faces", "people")


def minute_key(minute: int, camera: str) -> str:
    return json.dumps([int(minute), camera])


def enqueue(conn: sqlite3.Connection, table: str, keys: Iterable[Any]) -> None:
    """Enter changed rows (within the change's transaction)."""
    conn.executemany("INSERT OR REPLACE INTO outbox (tbl, key) VALUES (?, ?)", [(table, str(k)) for k in keys])


def is_enabled(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT value FROM meta WHERE key = 'outbox'").fetchone()
    return row is not None and row[0] == "on"


def enable(conn: sqlite3.Connection) -> bool:
    """Turn the outbox on (within a transaction), entering every existing row the first
    time; True if it was off."""
    if is_enabled(conn):
        return False
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('outbox', 'on')")
    for table in ("runs", "gaps", "visits"):
        enqueue(conn, table, (r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()))
    enqueue(conn, "cameras", (r[0] for r in conn.execute("SELECT name FROM cameras ORDER BY name").fetchall()))
    minutes = conn.execute(
        "SELECT minute, camera FROM minute_stats UNION SELECT minute, camera FROM minute_hist ORDER BY 1, 2"
    ).fetchall()
    enqueue(conn, "minutes", (minute_key(m, c) for m, c in minutes))
    return True


def store_id(conn: sqlite3.Connection) -> str:
    """The store's own random id (made once, within a transaction): a central store tells
    two stores under one kiosk id apart by it."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    if row is not None:
        return str(row[0])
    new = uuid.uuid4().hex
    conn.execute("INSERT INTO meta (key, value) VALUES ('store_id', ?)", (new,))
    return new


def pending(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


@dataclass
class Batch:
    """Rows to send, as dicts of the central columns (without the kiosk id), and the
    outbox entries they answer; `remaining` counts the entries left after this batch."""

    seqs: list[int] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    cameras: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    visits: list[dict[str, Any]] = field(default_factory=list)
    minute_stats: list[dict[str, Any]] = field(default_factory=list)
    minute_hist: list[dict[str, Any]] = field(default_factory=list)
    live: list[dict[str, Any]] = field(default_factory=list)
    remaining: int = 0
    age_brackets: str | None = None

    @property
    def rows(self) -> int:
        return len(self.runs) + len(self.cameras) + len(self.gaps) + len(self.visits) + len(self.minute_stats) + len(self.minute_hist)


def _select(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], where: str, keys: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cols = ", ".join(f'"{c}"' for c in columns)
    # chunks below SQLite's bound-parameter limit
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        marks = ", ".join("?" * len(chunk))
        out += [dict(zip(columns, r)) for r in conn.execute(f"SELECT {cols} FROM {table} WHERE {where} IN ({marks})", chunk)]
    return out


def read_batch(conn: sqlite3.Connection, limit: int) -> Batch:
    """The oldest `limit` entries and their rows, read in one snapshot (one read transaction)."""
    batch = Batch()
    conn.execute("BEGIN")
    try:
        entries = conn.execute("SELECT seq, tbl, key FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        keys: dict[str, list[str]] = {t: [] for t in TABLES}
        for seq, table, key in entries:
            batch.seqs.append(int(seq))
            keys.setdefault(table, []).append(key)
        ids = {t: [int(k) for k in keys[t]] for t in ("runs", "gaps", "visits")}
        # a row gone since (a visit past retention before it was sent cannot be: retention
        # keeps rows with entries) is simply not sent
        batch.runs = _select(conn, "runs", RUN_COLUMNS, "id", ids["runs"])
        batch.gaps = _select(conn, "gaps", GAP_COLUMNS, "id", ids["gaps"])
        batch.visits = _select(conn, "visits", VISIT_COLUMNS, "id", ids["visits"])
        batch.cameras = [{"name": k} for k in keys["cameras"]]
        for key in keys["minutes"]:
            minute, camera = json.loads(key)
            batch.minute_stats += _select_minute(conn, "minute_stats", STAT_COLUMNS, minute, camera)
            batch.minute_hist += _select_minute(conn, "minute_hist", HIST_COLUMNS, minute, camera)
        batch.live = [dict(zip(LIVE_COLUMNS, r)) for r in conn.execute(f"SELECT {', '.join(LIVE_COLUMNS)} FROM live")]
        batch.remaining = pending(conn) - len(entries)
        row = conn.execute("SELECT value FROM meta WHERE key = 'age_brackets'").fetchone()
        batch.age_brackets = None if row is None else str(row[0])
    finally:
        conn.execute("COMMIT")
    return batch


def _select_minute(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], minute: int, camera: str) -> list[dict[str, Any]]:
    cols = ", ".join(columns)
    return [dict(zip(columns, r)) for r in conn.execute(f"SELECT {cols} FROM {table} WHERE minute = ? AND camera = ?", (minute, camera))]


def mark_sent(conn: sqlite3.Connection, seqs: list[int]) -> None:
    """Delete the entries a central commit confirmed; entries renumbered since stay."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for i in range(0, len(seqs), 500):
            chunk = seqs[i : i + 500]
            conn.execute(f"DELETE FROM outbox WHERE seq IN ({', '.join('?' * len(chunk))})", chunk)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
