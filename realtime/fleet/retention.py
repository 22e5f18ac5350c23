"""Central retention: visit rows go after a period, the per-minute aggregates stay.

The kiosks keep their own retention for their own stores; the central store's is the
administrator's, run from cron or a systemd timer (README, "Kiosk fleet").
"""

from __future__ import annotations

from ..errors import UserError
from ..kiosk.tables import kiosk_tables
from .urls import create_engine, display_url, reason


def prune_visits(url: str, cutoff: float) -> int:
    """Delete central visit rows that ended before cutoff (as the store's owner); rows deleted."""
    from sqlalchemy import delete
    from sqlalchemy.exc import SQLAlchemyError

    visits = kiosk_tables(central=True).visits
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return int(conn.execute(delete(visits).where(visits.c.end < cutoff)).rowcount)
    except SQLAlchemyError as exc:
        raise UserError(f"cannot prune the central store {display_url(url)}: {reason(exc)}") from None
    finally:
        engine.dispose()
