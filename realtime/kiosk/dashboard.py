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

Every endpoint takes camera=NAME for one camera's figures (default: all cameras, summed).

On the fleet's central store (`dashboard --store postgresql://...`) the figures are the
sums over the kiosks, and every endpoint also takes site=, location= and kiosk= (those
fixed on the command line cannot be widened by a request); the page adds a per-site
comparison and the kiosks with their last contact. A central dashboard refuses to be
served beyond loopback without a token: it shows a whole fleet.

Hardening, on every response: a Content-Security-Policy that allows only the page's own
files (no inline script or style, no framing), nosniff, no Referer, no Server header.
Requests must name this server in their Host header (a DNS-rebinding page names its own
host), and with a token set (`AGEGENDER_DASHBOARD_TOKEN`) every request needs it, as
`Authorization: Bearer TOKEN` or once as `?token=TOKEN`, which leaves an HttpOnly
cookie for the page's own requests. It is served by waitress, a production WSGI server.
"""

from __future__ import annotations

import csv
import hmac
import io
import ipaddress
import logging
import re
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import urlencode

from ..errors import UserError
from . import report as reports
from .queries import StoreReader, VisitRow, is_store_url, row_columns
from .visits import ATTENTION_EDGES, DWELL_EDGES, bin_labels

HERE = Path(__file__).resolve().parent
REFRESH_S = 3.0
# range name -> (how far back, bucket seconds)
RANGES = {"hour": ("hour", 60), "today": ("today", 900), "week": ("week", 3600)}
TOKEN_ENV = "AGEGENDER_DASHBOARD_TOKEN"
TOKEN_COOKIE = "kiosk_dashboard_token"
# URL-unreserved characters only: a token must survive a query string (where + is a
# space), an Authorization header and a cookie unchanged
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]+")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# the page loads only its own script, style sheet and API; nothing may frame it
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # live figures: a kiosk browser must never show a cached page of yesterday
    "Cache-Control": "no-store",
}
VISIT_COLUMNS = row_columns(VisitRow)
# a central store's query parameters that narrow it to part of the fleet
SCOPE_PARAMS = ("site", "location", "kiosk")
CENTRAL_NEEDS_TOKEN = f"a central dashboard served beyond loopback needs an access token ({TOKEN_ENV})"


def store_ref(store: str | Path) -> str | Path:
    """A central store's URL as given, else a data dir as a Path."""
    return store if is_store_url(store) else Path(store)


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
        "brackets": {b: asdict(c) for b, c in reader.brackets(start, end).items()},
        "timeline": [asdict(b) for b in reader.timeline(start, end, bucket)],
        "dwell": {"labels": bin_labels(DWELL_EDGES), "visits": reader.histogram("dwell", start, end)},
        "attention": {"labels": bin_labels(ATTENTION_EDGES), "viewers": reader.histogram("attention", start, end)},
        # a kiosk's own store has no fleet: the key is left out, so its page is as before
        **({"fleet": fleet_data(reader, start, end, now)} if reader.central else {}),
    }


def fleet_data(reader: StoreReader, start: float, end: float, now: float) -> dict[str, Any]:
    """The central store's sites over the page's range, and its kiosks as of now."""
    return {
        "sites": [asdict(s) for s in reader.sites(start, end)],
        "kiosks": [{**asdict(k), "last_contact_iso": None if k.last_contact is None else reports.iso(k.last_contact)} for k in reader.kiosks(now)],
    }


def _visits_csv(reader: StoreReader, start: float, end: float) -> Iterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")

    def take() -> str:
        text = buf.getvalue()
        buf.seek(0)
        buf.truncate()
        return text

    columns = row_columns(reader.visit_row)  # a central store's with the kiosk
    w.writerow(["start_iso", "end_iso", *columns])
    yield take()
    for row in reader.iter_visits(start, end):
        w.writerow([reports.iso(row.start), reports.iso(row.end), *(getattr(row, c) for c in columns)])
        yield take()


def check_token(token: str | None) -> str | None:
    """The token as given, None for none; UserError for one that cannot travel intact."""
    if token is None or token == "":
        return None
    if not TOKEN_PATTERN.fullmatch(token):
        raise UserError(
            "the dashboard token may hold only letters, digits and - . _ ~ "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    return token


def resolve_token(given: str | None, environ: Mapping[str, str]) -> str | None:
    """An option's token, else the environment's (which, unlike options, no other user can list)."""
    return check_token(given if given is not None else environ.get(TOKEN_ENV))


def host_name(header: str) -> str | None:
    """The host of a Host header, lower case, without port or brackets; None if malformed."""
    match = re.fullmatch(r"\[([0-9a-f:.%a-z]+)\](?::\d+)?|([^:\[\]]+)(?::\d+)?", header.strip().lower())
    if match is None:
        return None
    name = (match.group(1) or match.group(2)).rstrip(".")
    return name or None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(address: str) -> bool:
    ip = _ip(address)
    return ip.is_loopback if ip is not None else address.lower() == "localhost"


@dataclass(frozen=True)
class Access:
    """Who the dashboard answers: the host names a request may use, and the token it must carry."""

    hosts: frozenset[str] = frozenset(LOOPBACK_NAMES)
    # bound to every interface: any IP literal of this machine may be used, and an IP
    # literal cannot be rebound by DNS, so any IP literal is accepted then
    any_ip: bool = False
    token: str | None = field(default=None, repr=False)

    @classmethod
    def for_address(cls, host: str, bound_ip: str, extra_hosts: Iterable[str] = (), token: str | None = None) -> "Access":
        names = {host.lower().strip("[]"), str(_ip(bound_ip) or bound_ip)}
        names.update(h.lower().strip().strip("[]").rstrip(".") for h in extra_hosts)
        ip = _ip(bound_ip)
        any_ip = ip is not None and ip.is_unspecified
        if is_loopback(bound_ip) or any_ip:
            names.update(LOOPBACK_NAMES)
        if not is_loopback(bound_ip):
            # what other machines most likely call this one
            hostname = socket.gethostname().lower()
            names.update({hostname, f"{hostname}.local"})
        return cls(frozenset(n for n in names if n), any_ip, check_token(token))

    def allows_host(self, name: str) -> bool:
        if name in self.hosts:
            return True
        ip = _ip(name)
        return ip is not None and (self.any_ip or str(ip) in self.hosts)

    def token_matches(self, offered: str | None) -> bool:
        if self.token is None or not offered:
            return False
        return hmac.compare_digest(offered.encode("utf-8", "replace"), self.token.encode("utf-8"))


def create_app(store: str | Path, access: Access | None = None, *, scope: Mapping[str, str] | None = None) -> Any:
    """The dashboard on a data dir (a kiosk's store) or a PostgreSQL URL (the fleet's);
    scope: site, location or kiosk that every request is narrowed to."""
    try:
        from flask import Flask
    except ImportError:
        raise UserError("the dashboard needs Flask: pip install 'flask>=3.0'") from None

    app = Flask("realtime.kiosk.dashboard", static_folder=str(HERE / "static"), template_folder=str(HERE / "templates"))
    app.json.sort_keys = False  # type: ignore[attr-defined]
    _guard(app, Access() if access is None else access)
    _answer_errors(app)
    _routes(app, store_ref(store), dict(scope or {}))
    return app


def _guard(app: Any, access: Access) -> None:
    """Every request: the Host check and the token; every response: the security headers."""
    from flask import g, jsonify, redirect, request

    @app.before_request
    def guard() -> Any:
        name = host_name(request.environ.get("HTTP_HOST", ""))
        if name is None or not access.allows_host(name):
            # a page on another site whose name now resolves here (DNS rebinding)
            return jsonify(error="this dashboard does not answer to that host name (allow one with --dashboard-allow-host, or --allow-host when served alone)"), 421
        if access.token is None:
            return None
        bearer = request.headers.get("Authorization", "")
        if bearer[:7].lower() == "bearer " and access.token_matches(bearer[7:].strip()):
            return None
        if access.token_matches(request.cookies.get(TOKEN_COOKIE)):
            return None
        if access.token_matches(request.args.get("token")):
            g.set_token_cookie = True
            if request.path == "/":
                # the page again without the token, so it stays out of the address bar and history
                rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
                return redirect("/" + (f"?{urlencode(rest)}" if rest else ""), code=303)
            return None
        response = jsonify(error=f"this dashboard needs its access token ({TOKEN_ENV}): send it as 'Authorization: Bearer TOKEN' or open /?token=TOKEN once")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="kiosk dashboard"'
        return response

    @app.after_request
    def harden(response: Any) -> Any:
        response.headers.update(SECURITY_HEADERS)
        if g.get("set_token_cookie"):
            response.set_cookie(TOKEN_COOKIE, access.token or "", httponly=True, samesite="Strict", path="/")
        return response


def _answer_errors(app: Any) -> None:
    """Errors as one line of JSON: the user's own (400) said, the server's (500) not."""
    from flask import jsonify
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(UserError)
    def user_error(exc: UserError) -> Any:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(ValueError)
    def bad_value(exc: ValueError) -> Any:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=f"{exc.code} {exc.name}"), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        # logged with its traceback by Flask; the client learns nothing of the internals
        app.logger.error("dashboard request failed", exc_info=exc)
        return jsonify(error="internal error"), 500


def _csv(body: Any, filename: str) -> Any:
    from flask import Response

    return Response(body, mimetype="text/csv", headers={"Content-Disposition": f"attachment; filename={filename}"})


def _routes(app: Any, store: str | Path, fixed: dict[str, str]) -> None:
    """The page, the API and the exports, each read from the store at request time."""
    from flask import jsonify, render_template, request

    def reader() -> StoreReader:
        scope = {k: request.args.get(k) or None for k in SCOPE_PARAMS} | fixed
        return StoreReader(store, camera=request.args.get("camera") or None, **scope)

    def period(r: StoreReader) -> tuple[float, float]:
        return reports.resolve_range(r, request.args.get("from") or None, request.args.get("to") or None)

    def report() -> reports.Report:
        r = reader()
        return reports.build_report(r, *period(r))

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
        return jsonify(reports.to_dict(report()))

    @app.get("/export/report.csv")
    def export_report() -> Any:
        return _csv(reports.to_csv(report()), "kiosk-report.csv")

    @app.get("/export/visits.csv")
    def export_visits() -> Any:
        r = reader()
        return _csv(_visits_csv(r, *period(r)), "kiosk-visits.csv")


@dataclass
class DashboardServer:
    """The app on a waitress server whose event loop runs in a daemon thread."""

    server: Any
    thread: threading.Thread
    host: str
    port: int
    access: Access = field(default_factory=Access)
    stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def exposed(self) -> bool:
        """Reachable from other machines (bound to an address that is not loopback)."""
        return not is_loopback(str(self.server.socket.getsockname()[0]))

    def exposure_warning(self) -> str | None:
        """One line for the operator when other machines can reach the dashboard."""
        if not self.exposed:
            return None
        guard = "a token is required" if self.access.token else f"anyone who can reach it can read it: set {TOKEN_ENV} to require a token"
        return f"warning: the dashboard on {self.host}:{self.port} is reachable from other machines over plain HTTP; {guard}"

    @classmethod
    def start(
        cls,
        store: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        allowed_hosts: Iterable[str] = (),
        scope: Mapping[str, str] | None = None,
    ) -> "DashboardServer":
        """Serve the dashboard of a data dir or of the central store (its URL) in a thread."""
        try:
            from waitress.server import create_server
        except ImportError:
            raise UserError("the dashboard needs waitress: pip install 'waitress>=3.0'") from None

        # bind here rather than in waitress, to say why in one line when it cannot
        sock = _listen(host, port)
        try:
            access = Access.for_address(host, str(sock.getsockname()[0]), allowed_hosts, token)
            if is_store_url(store) and access.token is None and not is_loopback(str(sock.getsockname()[0])):
                raise UserError(CENTRAL_NEEDS_TOKEN)
            app = create_app(store, access, scope=scope)
            socket_map: dict[int, Any] = {}
            # ident "" sends no Server header: nothing to tell a scanner which versions run
            server = create_server(app, map=socket_map, sockets=[sock], threads=4, ident="", asyncore_use_poll=True)
        except BaseException:
            sock.close()
            raise
        # waitress logs each queue-depth hiccup; a kiosk's own output matters more
        logging.getLogger("waitress").setLevel(logging.ERROR)
        stopping = threading.Event()
        thread = threading.Thread(target=_serve, args=(server, socket_map, stopping), name="kiosk-dashboard", daemon=True)
        thread.start()
        return cls(server, thread, host, int(sock.getsockname()[1]), access, stopping)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            try:
                self.server.pull_trigger()  # wake the loop at once rather than at its next timeout
            except OSError:
                pass
        self.thread.join(timeout=10)


def _serve(server: Any, socket_map: dict[int, Any], stopping: threading.Event) -> None:
    """waitress's loop, one poll at a time so that stop() ends it; all closing happens here."""
    from waitress import wasyncore

    try:
        while not stopping.is_set():
            wasyncore.loop(timeout=1.0, use_poll=True, map=socket_map, count=1)
    finally:
        for channel in list(socket_map.values()):
            if channel is server or channel is server.trigger:
                continue
            try:
                channel.handle_close()  # also wakes a request thread waiting to write to it
            except OSError:
                pass
        server.close()
        server.task_dispatcher.shutdown(timeout=5)


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
