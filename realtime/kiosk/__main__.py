"""python -m realtime.kiosk {report,dashboard}

    report     --data-dir DIR [--from T1] [--to T2] [--camera NAME] [--format csv|json|html] [--out FILE]
    dashboard  --data-dir DIR [--host 127.0.0.1] [--port 8765] [--allow-host NAME] [--token T]
                                                                 (the page alone, on a store;
                                                                  token also from AGEGENDER_DASHBOARD_TOKEN)

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


def _report(args: argparse.Namespace) -> int:
    from . import report
    from .store import StoreReader, store_file

    reader = StoreReader(args.data_dir, camera=args.camera)
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
    from .session import DEFAULT_PORT

    p = OneLineParser(prog="python -m realtime.kiosk", description="Kiosk reports and dashboard.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    r = sub.add_parser("report", help="an audience report over a period")
    r.add_argument("--data-dir", type=Path, required=True, help="the kiosk's store folder")
    r.add_argument("--from", dest="start", help="start, ISO date or date-time, local time unless a zone is given (default: first data)")
    r.add_argument("--to", dest="end", help="end (exclusive); a bare date means the end of that day (default: now)")
    r.add_argument("--camera", metavar="NAME", help="one camera's figures (default: all cameras, summed)")
    r.add_argument("--format", choices=("csv", "json", "html"), default="json")
    r.add_argument("--out", type=Path, help="write here instead of standard output")
    d = sub.add_parser("dashboard", help="serve the dashboard on an existing store")
    d.add_argument("--data-dir", type=Path, required=True)
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
