"""The kiosk's local dashboard: a page, a JSON API and CSV export on one small server.

It runs in a thread of the kiosk process (or alone: `python -m realtime.kiosk dashboard`)
and only reads the store, through its own SQLite connections, so it never slows the
writer. It binds to 127.0.0.1 unless told otherwise: the figures are anonymous, but a
kiosk's network is rarely one to trust. Everything it serves, the chart library
included, is local, so it works offline.

    GET /                          the page (refreshes itself every few seconds)
    GET /api/dashboard?range=R     everything the page shows; R = hour, today (default) or week
    GET /api/live                  people in view now
    GET /api/report?from=&to=      the report's JSON (same as `report --format json`)
    GET /export/visits.csv?from=&to=   visit rows (within the retention period)
    GET /export/report.csv?from=&to=   the report's CSV
"""

from __future__ import annotations

import csv
import io
import logging
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError
from . import report as reports
from .store import StoreReader
from .visits import ATTENTION_EDGES, DWELL_EDGES, GENDERS, bin_labels

HERE = Path(__file__).resolve().parent
REFRESH_S = 3.0
# range name -> (how far back, bucket seconds)
RANGES = {"hour": ("hour", 60), "today": ("today", 900), "week": ("week", 3600)}
VISIT_COLUMNS = ["run_id", "track_id", "start", "end", "dwell_s", "attention_s", "glances", "age", "age_std", "bracket", "gender", "gender_confidence"]


def local_midnight(now: float) -> float:
    d = datetime.fromtimestamp(now)
    return datetime(d.year, d.month, d.day).timestamp()


def range_bounds(name: str, now: float) -> tuple[float, float, int]:
    """[start, end) and the timeline bucket for one of the page's ranges."""
    if name not in RANGES:
        raise ValueError(f"unknown range {name!r}: use one of {', '.join(RANGES)}")
    _, bucket = RANGES[name]
    if name == "hour":
        start = (int(now // 60) - 59) * 60.0
    elif name == "today":
        start = local_midnight(now)
    else:
        start = (datetime.fromtimestamp(local_midnight(now)) - timedelta(days=6)).timestamp()
    return start, now, bucket


def dashboard_data(reader: StoreReader, range_name: str = "today", now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    start, end, bucket = range_bounds(range_name, now)
    today = reader.totals(local_midnight(now), now)
    live = reader.live(now)
    return {
        "now": reports.iso(now),
        "range": {"name": range_name, "from": reports.iso(start), "to": reports.iso(end), "bucket_s": bucket},
        "live": asdict(live),
        "today": today.as_dict(),
        "period": reader.totals(start, end).as_dict(),
        "brackets": {b: {g: c.get(g, 0) for g in GENDERS} for b, c in reader.brackets(start, end).items()},
        "timeline": reader.timeline(start, end, bucket),
        "dwell": {"labels": bin_labels(DWELL_EDGES), "visits": reader.histogram("dwell", start, end)},
        "attention": {"labels": bin_labels(ATTENTION_EDGES), "viewers": reader.histogram("attention", start, end)},
    }


def _visits_csv(reader: StoreReader, start: float, end: float) -> Iterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")

    def take() -> str:
        text = buf.getvalue()
        buf.seek(0)
        buf.truncate()
        return text

    w.writerow(["start_iso", "end_iso", *VISIT_COLUMNS])
    yield take()
    for row in reader.iter_visits(start, end):
        w.writerow([reports.iso(row["start"]), reports.iso(row["end"]), *(row[c] for c in VISIT_COLUMNS)])
        yield take()


def create_app(data_dir: str | Path) -> Any:
    try:
        from flask import Flask, Response, jsonify, render_template, request
    except ImportError:
        raise UserError("the dashboard needs Flask: pip install 'flask>=3.0'") from None

    data_dir = Path(data_dir)
    app = Flask("realtime.kiosk.dashboard", static_folder=str(HERE / "static"), template_folder=str(HERE / "templates"))
    app.json.sort_keys = False  # type: ignore[attr-defined]

    def reader() -> StoreReader:
        return StoreReader(data_dir)

    def period() -> tuple[float, float]:
        return reports.resolve_range(reader(), request.args.get("from") or None, request.args.get("to") or None)

    @app.errorhandler(UserError)
    def user_error(exc: UserError) -> Any:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(ValueError)
    def bad_value(exc: ValueError) -> Any:
        return jsonify(error=str(exc)), 400

    @app.get("/")
    def page() -> Any:
        return render_template("dashboard.html", refresh_ms=int(REFRESH_S * 1000), ranges=list(RANGES))

    @app.get("/api/dashboard")
    def api_dashboard() -> Any:
        return jsonify(dashboard_data(reader(), request.args.get("range", "today")))

    @app.get("/api/live")
    def api_live() -> Any:
        return jsonify(asdict(reader().live()))

    @app.get("/api/report")
    def api_report() -> Any:
        r = reader()
        start, end = period()
        return jsonify(reports.to_dict(reports.build_report(r, start, end)))

    @app.get("/export/report.csv")
    def export_report() -> Any:
        r = reader()
        start, end = period()
        text = reports.to_csv(reports.build_report(r, start, end))
        return Response(text, mimetype="text/csv", headers={"Content-Disposition": "attachment; filename=kiosk-report.csv"})

    @app.get("/export/visits.csv")
    def export_visits() -> Any:
        r = reader()
        start, end = period()
        return Response(_visits_csv(r, start, end), mimetype="text/csv", headers={"Content-Disposition": "attachment; filename=kiosk-visits.csv"})

    @app.after_request
    def no_cache(response: Any) -> Any:
        # live figures: a kiosk browser must never show a cached page of yesterday
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


@dataclass
class DashboardServer:
    """The app on a werkzeug server in a daemon thread."""

    server: Any
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @classmethod
    def start(cls, data_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> "DashboardServer":
        from werkzeug.serving import make_server

        app = create_app(data_dir)
        # one log line per request every few seconds would bury the kiosk's own output
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # bind here rather than in werkzeug, which prints its own lines and exits
        sock = _listen(host, port)
        try:
            server = make_server(host, port, app, threaded=True, fd=sock.fileno())
        finally:
            sock.close()  # werkzeug serves on a duplicate of it
        thread = threading.Thread(target=server.serve_forever, name="kiosk-dashboard", daemon=True)
        thread.start()
        return cls(server, thread, host, int(server.socket.getsockname()[1]))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(64)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UserError(f"cannot serve the dashboard on {host}:{port}: {reason}") from None
    return sock
