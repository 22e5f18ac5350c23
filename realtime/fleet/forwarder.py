"""Forwarding: a kiosk's outbox, copied to the fleet's central store in batches.

A batch is the oldest entries of the store's outbox (see realtime.kiosk.outbox) and
their rows, read in one SQLite snapshot, upserted into the central store in one
PostgreSQL transaction keyed by (kiosk id, local key), then deleted from the outbox.
So a row is marked sent only after the central commit, and a crash between the two
sends it again, which the upsert makes harmless. The kiosk's row in the central store
records its labels, its last contact (the server's clock, so kiosks with wrong clocks
still show the truth) and the backlog it still holds.

On failure (network down, server restarting) the forwarder retries with exponential
backoff and jitter, up to `retry_max_s` between tries, for as long as it runs: the
kiosk goes on recording into its outbox meanwhile, and the backlog drains in order on
return. Errors that waiting cannot fix (kiosk not registered, its id taken by another
store) are reported the same way, as the forwarder's last error, and retried at the
slowest pace, since an administrator can fix them without touching the kiosk.

    forwarder = Forwarder.create_from_options(ForwarderOptions(data_dir, url, "store-042"))
    forwarder.start()            # a background thread
    ...
    forwarder.close()            # one last attempt to drain, bounded
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError
from ..kiosk import outbox
from ..kiosk.outbox import Batch
from ..kiosk.store import _connect, _identify, store_file
from ..kiosk.tables import KioskTables, kiosk_tables
from .migrations import LATEST
from .roles import check_kiosk_id, check_labels
from .urls import create_engine, display_url, reason

log = logging.getLogger(__name__)


class ForwardError(Exception):
    """A batch could not be sent; `permanent` when waiting alone will not fix it."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class SentBatch:
    """One batch the central store committed (given to on_sent before it is marked sent)."""

    entries: int
    rows: int
    visits: int
    remaining: int


@dataclass(frozen=True)
class ForwarderOptions:
    data_dir: Path
    central_url: str = field(repr=False)  # may hold a password
    kiosk_id: str = ""
    site: str | None = None  # None: leave the central store's label as it is
    location: str | None = None
    batch_entries: int = 2000
    # between passes while all is well: the uplink is mostly per pass (docs/fleet.md)
    interval_s: float = 30.0
    retry_min_s: float = 2.0
    retry_max_s: float = 300.0
    connect_timeout_s: float = 10.0
    statement_timeout_s: float = 120.0  # a batch the server has not answered by then is retried
    # called after each central commit, before the batch is marked sent locally
    on_sent: Callable[[SentBatch], None] | None = None


@dataclass(frozen=True)
class ForwarderStatus:
    backlog: int | None  # outbox entries waiting, as of the last pass
    last_contact: float | None  # time.time() of the last central commit
    last_error: str | None  # None after a pass that succeeded
    sent_rows: int
    batches: int


def retry_delay(failures: int, low: float, high: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: low * 2^(failures-1), capped at high, times 0.5-1."""
    base = min(high, low * (2.0 ** max(0, failures - 1)))
    return base * (0.5 + 0.5 * rng.random())


class Forwarder:
    def __init__(self, options: ForwarderOptions, conn: sqlite3.Connection, engine: Any, store_id: str) -> None:
        self.options = options
        self._conn = conn
        self._engine = engine
        self._store_id = store_id
        self._tables: KioskTables = kiosk_tables(central=True)
        self._lock = threading.Lock()  # one batch at a time: the thread's, or close's last
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self._backlog: int | None = None
        self._last_contact: float | None = None
        self._last_error: str | None = None
        self._sent_rows = 0
        self._batches = 0
        self._schema_checked = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def create_from_options(cls, options: ForwarderOptions) -> "Forwarder":
        """Open the kiosk's store for forwarding (turning its outbox on) and prepare the
        central connection; nothing is sent yet, so a server that is down is no error here."""
        check_kiosk_id(options.kiosk_id)
        check_labels(options.site, options.location)
        path = store_file(Path(options.data_dir))
        if not path.is_file():
            raise UserError(f"no kiosk store in {options.data_dir} (expected {path})")
        _identify(path)
        conn = _connect(path)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version < 4:
                raise UserError(f"the kiosk store {path} predates forwarding (schema {version}): run the kiosk on it once with this version")
            conn.execute("BEGIN IMMEDIATE")
            try:
                outbox.enable(conn)
                store_id = outbox.store_id(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            conn.close()
            raise UserError(f"cannot forward from the kiosk store {path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        engine = create_engine(
            options.central_url, options.connect_timeout_s, application=f"agegender-kiosk-{options.kiosk_id}", pre_ping=False,
            statement_timeout_s=options.statement_timeout_s,
        )
        return cls(options, conn, engine, store_id)

    # ------------------------------------------------------------------ sending

    def send_once(self) -> SentBatch:
        """Send the oldest batch (or, with an empty outbox, just the live rows and the
        contact); ForwardError if the central store did not take it."""
        with self._lock:
            return self._send_once()

    def _send_once(self) -> SentBatch:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            batch = outbox.read_batch(self._conn, self.options.batch_entries)
        except sqlite3.Error as exc:
            raise ForwardError(f"cannot read the kiosk store's outbox: {exc}") from None
        try:
            with self._engine.begin() as conn:
                # the outbox entries go once the commit returns, so it must be durable
                # whatever the server's default (synchronous_commit = off loses the last
                # commits in a server crash)
                conn.execute(text("SET LOCAL synchronous_commit TO on"))
                self._claim(conn)
                self._upsert(conn, batch)
                self._touch(conn, batch)
        except ForwardError:
            raise
        except SQLAlchemyError as exc:
            text = reason(exc)
            permanent = any(w in text for w in ("permission denied", "row-level security", "authentication failed"))
            raise ForwardError(f"cannot send to the central store {display_url(self.options.central_url)}: {text}", permanent) from None
        sent = SentBatch(len(batch.seqs), batch.rows, len(batch.visits), batch.remaining)
        if self.options.on_sent is not None:
            self.options.on_sent(sent)
        try:
            outbox.mark_sent(self._conn, batch.seqs)
        except sqlite3.Error as exc:
            # sent but not marked: the next pass sends these rows again, harmlessly
            raise ForwardError(f"cannot mark rows sent in the kiosk store: {exc}") from None
        self._backlog = batch.remaining
        self._last_contact = time.time()
        self._last_error = None
        self._sent_rows += batch.rows
        self._batches += 1
        return sent

    def _claim(self, conn: Any) -> None:
        """Check that this login may write this kiosk's rows, and that no other store uses its id."""
        from sqlalchemy import select, text, update

        k = self._tables.kiosks
        assert k is not None
        if not self._schema_checked:  # once per forwarder: a store is not migrated backwards
            version = conn.execute(text("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")).scalar()
            if int(version) < LATEST:
                raise ForwardError(f"the central store is at schema version {version}, this kiosk needs {LATEST}: run python -m realtime.fleet migrate", True)
            self._schema_checked = True
        kiosk_id = self.options.kiosk_id
        # a kiosk's role sees only its own row (row-level security)
        row = conn.execute(select(k.c.store_id).where(k.c.kiosk_id == kiosk_id)).first()
        if row is None:
            user = conn.execute(text("SELECT current_user")).scalar()
            raise ForwardError(
                f"kiosk {kiosk_id} is not registered in the central store for login {user} "
                f"(register it: python -m realtime.fleet add-kiosk --kiosk-id {kiosk_id})", True
            )
        if row.store_id is not None and row.store_id != self._store_id:
            raise ForwardError(f"kiosk id {kiosk_id} is already used by another kiosk store: give this kiosk its own --kiosk-id", True)
        if row.store_id is None:
            conn.execute(update(k).where(k.c.kiosk_id == kiosk_id).values(store_id=self._store_id))

    def _upsert(self, conn: Any, batch: Batch) -> None:
        from sqlalchemy.dialects.postgresql import insert

        t = self._tables
        kiosk_id = self.options.kiosk_id
        for table, rows in (
            (t.runs, batch.runs), (t.cameras, batch.cameras), (t.gaps, batch.gaps), (t.visits, batch.visits),
            (t.minute_stats, batch.minute_stats), (t.minute_hist, batch.minute_hist), (t.live, batch.live),
        ):
            if not rows or table is None:
                continue
            stmt = insert(table)
            keys = [c.name for c in table.primary_key.columns]
            values = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
            # rows are whole and current: a resend overwrites with the same values
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=values) if values else stmt.on_conflict_do_nothing(index_elements=keys)
            conn.execute(stmt, [{"kiosk_id": kiosk_id, **r} for r in rows])

    def _touch(self, conn: Any, batch: Batch) -> None:
        from sqlalchemy import func, update

        k = self._tables.kiosks
        assert k is not None
        now = func.extract("epoch", func.now())
        values: dict[str, Any] = {
            "last_contact": now,
            "first_contact": func.coalesce(k.c.first_contact, now),
            "backlog": batch.remaining,
        }
        if batch.age_brackets is not None:
            values["age_brackets"] = batch.age_brackets
        if self.options.site is not None:
            values["site"] = self.options.site
        if self.options.location is not None:
            values["location"] = self.options.location
        conn.execute(update(k).where(k.c.kiosk_id == self.options.kiosk_id).values(**values))

    def drain(self, max_batches: int | None = None) -> int:
        """Send batches until the outbox is empty (or max_batches, or close); rows sent."""
        rows = 0
        n = 0
        while True:
            sent = self.send_once()
            rows += sent.rows
            n += 1
            if sent.remaining <= 0 or self._stop.is_set() or (max_batches is not None and n >= max_batches):
                return rows

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        """Forward in a background thread until close()."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kiosk-forwarder", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.drain()
                failures = 0
                delay = self.options.interval_s
            except ForwardError as exc:
                failures += 1
                if str(exc) != self._last_error:
                    log.warning("%s (retrying)", exc)
                self._last_error = str(exc)
                high = self.options.retry_max_s
                delay = high if exc.permanent else retry_delay(failures, self.options.retry_min_s, high, self._rng)
            except Exception as exc:  # never let the kiosk lose its forwarder silently
                failures += 1
                self._last_error = f"forwarding failed: {exc}"
                log.exception("forwarding failed")
                delay = retry_delay(failures, self.options.retry_min_s, self.options.retry_max_s, self._rng)

    def status(self) -> ForwarderStatus:
        return ForwarderStatus(self._backlog, self._last_contact, self._last_error, self._sent_rows, self._batches)

    def close(self, final_s: float = 5.0) -> ForwarderStatus:
        """Stop the thread, try once more to send what the kiosk's stop wrote (for at most
        about final_s: a server that is down leaves it in the outbox for the next run), close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=final_s + 1.0)
        # a server that failed the last pass is not waited for again at the stop, nor one
        # still busy with the thread's batch (the lock is not free)
        if final_s > 0 and self._last_error is None and self._lock.acquire(timeout=final_s):
            try:
                deadline = time.monotonic() + final_s
                while time.monotonic() < deadline:
                    if self._send_once().remaining <= 0:
                        break
            except ForwardError as exc:
                self._last_error = str(exc)
            finally:
                self._lock.release()
        status = self.status()
        try:
            self._engine.dispose()
        finally:
            self._conn.close()
        return status

    def __enter__(self) -> "Forwarder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

