"""python -m realtime.kiosk {report,dashboard}

    report     (--data-dir DIR | --store URL) [--from T1] [--to T2] [--camera NAME] [--format csv|json|html] [--out FILE]
    dashboard  (--data-dir DIR | --store URL) [--host 127.0.0.1] [--port 8765] [--allow-host NAME] [--token T]
                                                                 (the page alone, on a store;
                                                                  token also from AGEGENDER_DASHBOARD_TOKEN)

--data-dir reads a kiosk's own store; --store postgresql://USER@HOST/DB the fleet's central
one (also from AGEGENDER_STORE, which keeps a password out of the process list; libpq's
PGPASSWORD and ~/.pgpass work too), narrowed by --site, --location and --kiosk.

Exit codes: 0 done, 2 bad input (one line on stderr), 1 unexpected error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..cli import OneLineParser, port_number, run_command, silence_native_logs

silence_native_logs()  # before OpenCV and MediaPipe load


def _store(args: argparse.Namespace) -> Path | str:
    """The data dir, else the central store's URL (the option's, else the environment's)."""
    from ..errors import UserError
    from ..fleet.urls import STORE_ENV, resolve_central

    if args.data_dir is not None:
        return args.data_dir
    # a URL that is not PostgreSQL's: one line, the text (and any password) not echoed
    url = resolve_central(args.store, os.environ, STORE_ENV)
    if url is None:
        raise UserError(f"name the store: --data-dir DIR (a kiosk's own) or --store postgresql://USER@HOST/DB (the fleet's; or set {STORE_ENV})")
    return url


def _scope(args: argparse.Namespace) -> dict[str, str]:
    return {k: v for k, v in (("site", args.site), ("location", args.location), ("kiosk", args.kiosk)) if v is not None}


def _report(args: argparse.Namespace) -> int:
    from . import report
    from .queries import StoreReader
    from .store import store_file

    store = _store(args)
    reader = StoreReader(store, camera=args.camera, **_scope(args))
    start, end = report.resolve_range(reader, args.start, args.end)
    if args.out is not None:
        from ..files import refuse_clashes
        from ..sinks import check_writable

        # before the work: an unwritable --out, or --out naming the store itself, fails at once
        check_writable(args.out)
        if not reader.central:
            refuse_clashes({"--out": args.out}, {"--data-dir": store_file(args.data_dir)})
    text = report.render(report.build_report(reader, start, end), args.format)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    from ..sinks import write_text_atomic

    # complete or untouched; through a symlink to its target; a device or FIFO is
    # written in place, never replaced by a regular file
    write_text_atomic(args.out, text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from .dashboard import DashboardServer, resolve_token
    from .queries import StoreReader

    token = resolve_token(args.token, os.environ)
    store, scope = _store(args), _scope(args)
    StoreReader(store, **scope)  # refuse a folder without a store, or an unreachable server, before serving
    server = DashboardServer.start(store, args.host, args.port, token=token, allowed_hosts=args.allow_host, scope=scope)
    warning = server.exposure_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"dashboard: {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _add_store(p: argparse.ArgumentParser) -> None:
    from .queries import STORE_ENV

    which = p.add_mutually_exclusive_group()
    which.add_argument("--data-dir", type=Path, help="the kiosk's store folder")
    which.add_argument("--store", metavar="URL", help=f"the fleet's central store, postgresql://USER@HOST[:PORT]/DB (better: set {STORE_ENV}, which other users cannot see in the process list)")
    p.add_argument("--site", help="central store: only this site's kiosks")
    p.add_argument("--location", help="central store: only the kiosks at this location")
    p.add_argument("--kiosk", metavar="ID", help="central store: only this kiosk")


def build_parser() -> argparse.ArgumentParser:
    from .dashboard import TOKEN_ENV
    from .session import DEFAULT_PORT

    p = OneLineParser(prog="python -m realtime.kiosk", description="Kiosk reports and dashboard.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    r = sub.add_parser("report", help="an audience report over a period")
    _add_store(r)
    r.add_argument("--from", dest="start", help="start, ISO date or date-time, local time unless a zone is given (default: first data)")
    r.add_argument("--to", dest="end", help="end (exclusive); a bare date means the end of that day (default: now)")
    r.add_argument("--camera", metavar="NAME", help="one camera's figures (default: all cameras, summed)")
    r.add_argument("--format", choices=("csv", "json", "html"), default="json")
    r.add_argument("--out", type=Path, help="write here instead of standard output")
    d = sub.add_parser("dashboard", help="serve the dashboard on an existing store")
    _add_store(d)
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=port_number, default=DEFAULT_PORT)
    d.add_argument("--token", help=f"require this access token on every request (better: set {TOKEN_ENV}, which other users cannot see in the process list)")
    d.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="a further host name the page may be opened under (repeatable; the bound address and, on loopback, localhost always work)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    return run_command(lambda: _report(args) if args.command == "report" else _dashboard(args))


if __name__ == "__main__":
    sys.exit(main())
