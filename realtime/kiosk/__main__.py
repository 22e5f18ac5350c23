"""python -m realtime.kiosk {report,dashboard,soak}

    report     --data-dir DIR [--from T1] [--to T2] [--format csv|json|html] [--out FILE]
    dashboard  --data-dir DIR [--host 127.0.0.1] [--port 8765] [--allow-host NAME] [--token T]
                                                                 (the page alone, on a store;
                                                                  token also from AGEGENDER_DASHBOARD_TOKEN)
    soak       [--minutes 60] [--fps 15]                         (memory soak, prints the growth)

Exit codes: 0 done, 2 bad input (one line on stderr), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _report(args: argparse.Namespace) -> int:
    from . import report
    from .store import StoreReader, store_file

    reader = StoreReader(args.data_dir)
    start, end = report.resolve_range(reader, args.start, args.end)
    if args.out is not None:
        from ..files import refuse_clashes
        from ..sinks import check_writable

        # before the work: an unwritable --out, or --out naming the store itself, fails at once
        check_writable(args.out)
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
    from .store import StoreReader

    token = resolve_token(args.token, os.environ)
    StoreReader(args.data_dir)  # refuse a folder without a store before serving
    server = DashboardServer.start(args.data_dir, args.host, args.port, token=token, allowed_hosts=args.allow_host)
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


def build_parser() -> argparse.ArgumentParser:
    from .dashboard import TOKEN_ENV
    from .session import DEFAULT_PORT, port_number

    p = _Parser(prog="python -m realtime.kiosk", description="Kiosk reports, dashboard and memory soak.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("report", help="an audience report over a period")
    r.add_argument("--data-dir", type=Path, required=True, help="the kiosk's store folder")
    r.add_argument("--from", dest="start", help="start, ISO date or date-time, local time unless a zone is given (default: first data)")
    r.add_argument("--to", dest="end", help="end (exclusive); a bare date means the end of that day (default: now)")
    r.add_argument("--format", choices=("csv", "json", "html"), default="json")
    r.add_argument("--out", type=Path, help="write here instead of standard output")
    d = sub.add_parser("dashboard", help="serve the dashboard on an existing store")
    d.add_argument("--data-dir", type=Path, required=True)
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=port_number, default=DEFAULT_PORT)
    d.add_argument("--token", help=f"require this access token on every request (better: set {TOKEN_ENV}, which other users cannot see in the process list)")
    d.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="a further host name the page may be opened under (repeatable; the bound address and, on loopback, localhost always work)")
    sub.add_parser("soak", help="memory soak on a synthetic stream (options: soak --help)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "soak":
        from .soak import main as soak_main

        return soak_main(argv[1:])
    args = build_parser().parse_args(argv)
    from ..errors import UserError

    try:
        return _report(args) if args.command == "report" else _dashboard(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if os.environ.get("AGEGENDER_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (set AGEGENDER_DEBUG=1 for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
