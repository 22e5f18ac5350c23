"""python -m realtime.fleet {migrate,add-kiosk,add-reader,forward,prune}

    migrate     --store URL [--to N]                      create or upgrade the central store's schema
    add-kiosk   --store URL --kiosk-id ID [--site S] [--location L] [--role NAME]
                                                          register a kiosk, create its login (password shown once)
    add-reader  --store URL --role NAME                   a read-only login for dashboards and reports
    forward     --data-dir DIR --central URL --kiosk-id ID [--site S] [--location L]
                                                          send a kiosk store's backlog now, then exit
    prune       --store URL --visit-days N                drop central visit rows older than N days (aggregates stay)

--store defaults to $AGEGENDER_STORE and --central to $AGEGENDER_CENTRAL, so that no
password need appear in the process list (libpq's PGPASSWORD and ~/.pgpass work too).
Exit codes: 0 done, 2 bad input or an unreachable store (one line on stderr), 1
unexpected error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..cli import OneLineParser, positive_int, run_command
from ..errors import UserError
from .urls import CENTRAL_ENV, display_url, resolve_central

STORE_ENV = "AGEGENDER_STORE"


def _store(args: argparse.Namespace) -> str:
    url = resolve_central(args.store, os.environ, STORE_ENV)
    if url is None:
        raise UserError(f"name the central store: --store postgresql://USER@HOST/DATABASE or ${STORE_ENV}")
    return url


def _migrate(args: argparse.Namespace) -> int:
    from .migrations import LATEST, migrate

    url = _store(args)
    result = migrate(url, LATEST if args.to is None else args.to)
    applied = ", ".join(map(str, result.applied)) or "none"
    print(f"central store {display_url(url)}: schema version {result.after} (applied: {applied})")
    return 0


def _add_kiosk(args: argparse.Namespace) -> int:
    from .roles import add_kiosk

    url = _store(args)
    login = add_kiosk(url, args.kiosk_id, args.site, args.location, args.role)
    print(f"kiosk {args.kiosk_id}: database role {login.role}, password {login.password} (shown once: keep it on the kiosk only)")
    print(f"on the kiosk: export {CENTRAL_ENV}='{login.url_for(url)}'")
    return 0


def _add_reader(args: argparse.Namespace) -> int:
    from .roles import add_reader

    url = _store(args)
    login = add_reader(url, args.role)
    print(f"reader {login.role}: password {login.password} (shown once)")
    print(f"for the dashboard: export {STORE_ENV}='{login.url_for(url)}'")
    return 0


def _forward(args: argparse.Namespace) -> int:
    from .forwarder import Forwarder, ForwarderOptions, ForwardError

    url = resolve_central(args.central)
    if url is None:
        raise UserError(f"name the central store: --central postgresql://USER@HOST/DATABASE or ${CENTRAL_ENV}")
    options = ForwarderOptions(args.data_dir, url, args.kiosk_id, args.site, args.location, connect_timeout_s=args.connect_timeout)
    forwarder = Forwarder.create_from_options(options)
    try:
        rows = forwarder.drain()
    except ForwardError as exc:
        raise UserError(str(exc)) from None
    finally:
        forwarder.close(final_s=0)
    print(f"sent {rows} rows to {display_url(url)}; nothing left to send")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from .retention import prune_visits

    url = _store(args)
    cutoff = time.time() - args.visit_days * 86400.0
    n = prune_visits(url, cutoff)
    print(f"dropped {n} visit rows that ended before {time.strftime('%Y-%m-%d %H:%M', time.localtime(cutoff))} (per-minute aggregates kept)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m realtime.fleet", description="The kiosk fleet's central PostgreSQL store.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    store_help = f"the central store, postgresql://USER@HOST[:PORT]/DATABASE (default: ${STORE_ENV})"
    m = sub.add_parser("migrate", help="create or upgrade the central store's schema")
    m.add_argument("--store", help=store_help)
    m.add_argument("--to", type=positive_int, help="stop at this schema version (default: the latest)")
    k = sub.add_parser("add-kiosk", help="register a kiosk and create its database login")
    k.add_argument("--store", help=store_help)
    k.add_argument("--kiosk-id", required=True)
    k.add_argument("--site", default="", help="the kiosk's site label (the kiosk may set it too)")
    k.add_argument("--location", default="", help="its location within the site")
    k.add_argument("--role", help="the database role's name (default: kiosk_<id>)")
    r = sub.add_parser("add-reader", help="a read-only database login for dashboards and reports")
    r.add_argument("--store", help=store_help)
    r.add_argument("--role", required=True)
    f = sub.add_parser("forward", help="send a kiosk store's backlog to the central store now, then exit")
    f.add_argument("--data-dir", type=Path, required=True, help="the kiosk's store folder")
    f.add_argument("--central", help=f"the central store, as the kiosk's own login (default: ${CENTRAL_ENV})")
    f.add_argument("--kiosk-id", required=True)
    f.add_argument("--site")
    f.add_argument("--location")
    f.add_argument("--connect-timeout", type=positive_int, default=10, metavar="SECONDS")
    pr = sub.add_parser("prune", help="drop central visit rows past their retention (per-minute aggregates stay)")
    pr.add_argument("--store", help=store_help)
    pr.add_argument("--visit-days", type=positive_int, required=True)
    return p


COMMANDS = {"migrate": _migrate, "add-kiosk": _add_kiosk, "add-reader": _add_reader, "forward": _forward, "prune": _prune}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    return run_command(lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
