"""Central retention: visit rows go after a period, the per-minute aggregates stay.

The kiosks keep their own retention for their own stores; the central store's is the
administrator's, run from cron or a systemd timer (README, "Kiosk fleet").
"""

from __future__ import annotations

from ..kiosk.tables import kiosk_tables
from .urls import connection


def prune_visits(url: str, cutoff: float) -> int:
    """Delete central visit rows that ended before cutoff (as the store's owner); rows deleted."""
    from sqlalchemy import delete

    visits = kiosk_tables(central=True).visits
    with connection(url, "cannot prune the central store") as conn, conn.begin():
        return int(conn.execute(delete(visits).where(visits.c.end < cutoff)).rowcount)
