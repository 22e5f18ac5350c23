"""Kiosk mode: the analyzer's results become visits in the store, with the dashboard beside.

    python run_camera.py --source 0 --kiosk --data-dir /var/lib/kiosk --dashboard

run_camera.py parses the options (`add_arguments`, `options_from_args`) and runs the
ordinary pipeline with one more sink: the `KioskSession`, which turns every frame's
result, and the people still in view when the run ends, into visits and writes them as
they happen (see store.py for durability). `KioskRun` holds the store and the dashboard
for the length of a run and closes the store with the reason the run ended.

Several cameras: one `KioskRun`, and one session per stream (`session_for(source,
camera)`), each writing its camera id on its visits, checkpoints, gaps and live row into
the one store. The sessions are called from one thread.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence

from ..cli import non_negative_float, port_number
from ..errors import UserError
from .store import DEFAULT_CAMERA, KioskStore, StoreOptions, check_camera
from .visits import AgeBrackets, Visit, VisitBuilder, VisitRules

if TYPE_CHECKING:  # run_camera.py imports this module to build its parser: keep it light
    from ..analyzer import FrameResult, TrackSummary
    from ..sinks import ShownFrame
    from ..sources import FrameSource, SourceInfo
    from ..summary import RunSummary

DEFAULT_PORT = 8765


class RunOutcome(Protocol):
    """How a run ended, as the kiosk reports it: one stream's RunSummary or the
    StreamsSummary of several."""

    @property
    def frames(self) -> int: ...

    @property
    def interrupted(self) -> bool: ...


@dataclass(frozen=True)
class CentralOptions:
    """Where a fleet kiosk forwards its rows (realtime.fleet), and its labels there."""

    url: str = field(repr=False)  # may hold the kiosk's password
    kiosk_id: str
    site: str | None = None
    location: str | None = None
    interval_s: float = 30.0


@dataclass(frozen=True)
class KioskOptions:
    data_dir: Path
    rules: VisitRules = VisitRules()
    store: StoreOptions = StoreOptions()
    dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = DEFAULT_PORT
    dashboard_token: str | None = field(default=None, repr=False)  # required on every request when set
    dashboard_allowed_hosts: tuple[str, ...] = ()  # host names beyond the bound address and loopback
    central: CentralOptions | None = None  # forward to a fleet's central store


class KioskSession:
    """One camera's frame results in; its visits, camera gaps and live count out to the store."""

    def __init__(
        self,
        store: KioskStore,
        rules: VisitRules,
        fps: float,
        source: FrameSource | None = None,
        origin: float | None = None,
        clock: Callable[[], float] = time.time,
        camera: str = DEFAULT_CAMERA,
    ) -> None:
        self.store = store
        self.camera = check_camera(camera)
        self.builder = VisitBuilder(rules, fps)
        self.source = source
        # wall-clock time of the source's time 0: set at the first frame unless given
        self.origin = origin
        self.clock = clock
        self.faces_now = 0
        self._pending: list[Visit] = []
        self._gaps_recorded = 0
        self.frames = 0
        self.visits = 0
        self.viewers = 0

    def frame(self, result: FrameResult) -> None:
        now = self.clock()
        # stamps never run ahead of the clock: a file read faster than real time is
        # stamped as if it had just been watched (a live source keeps its origin)
        latest = now - result.time
        self.origin = latest if self.origin is None else min(self.origin, latest)
        self.store.frames += 1  # the run's frames, of all cameras
        self.frames += 1
        self.faces_now = len(result.faces)
        self._pending.extend(self.builder.observe(result, self.origin))
        self._flush()
        self._record_gaps()
        # the visits in progress are checkpointed with the heartbeat, so that a kill loses
        # at most a heartbeat period of them too
        self.store.tick(self.faces_now, self.builder.people_now, now=now, open_visits=self._open_visits, camera=self.camera)

    def final(self, summaries: Iterable[TrackSummary]) -> None:
        """The people still in view when the run ends, and a camera gap still open."""
        if self.origin is None:
            self.origin = self.clock()
        self._pending.extend(self.builder.finish(summaries, self.origin))
        self.faces_now = 0
        self._flush()  # each visit replaces its checkpoint
        self._record_gaps(stopping=True)
        # no one is in view any more: no checkpoint may outlive the run
        self.store.tick(0, 0, now=self.clock(), force=True, open_visits=self._open_visits, camera=self.camera)

    def _open_visits(self) -> list[Visit]:
        assert self.origin is not None  # set by the first frame
        return self.builder.open_visits(self.origin)

    # the Sink interface (realtime/sinks/base.py)
    def open(self, info: SourceInfo) -> None:
        pass

    def on_frame(self, shown: ShownFrame) -> None:
        self.frame(shown.result)

    def on_people_finished(self, people: Sequence[TrackSummary], at_end: bool) -> None:
        # people who leave during the run arrive with their frame's result (on_frame)
        if at_end:
            self.final(people)

    def close(self, summary: RunSummary) -> None:
        pass

    def _flush(self) -> None:
        if not self._pending:
            return
        # the store writes idempotently, so a flush cut by a signal is simply redone
        self.store.add_visits(self._pending, camera=self.camera)
        self.visits += len(self._pending)
        self.viewers += sum(v.viewer for v in self._pending)
        self._pending.clear()

    def _record_gaps(self, stopping: bool = False) -> None:
        stats = getattr(self.source, "stats", None)  # live sources record their gaps
        if stats is None or self.origin is None:
            return
        so_far = getattr(stats, "gaps_so_far", None)
        # at the stop, a gap still open counts too, ending now: taken with the closed ones
        # in one snapshot, so a gap closing meanwhile is neither lost nor counted twice
        gaps = so_far() if stopping and so_far is not None else stats.gaps
        while self._gaps_recorded < len(gaps):
            start, end = gaps[self._gaps_recorded]
            self.store.add_gap(self.origin + start, self.origin + end, "camera", camera=self.camera)
            self._gaps_recorded += 1


class KioskRun:
    """The store and the dashboard for one run: the store opens first, so that a bad data
    dir fails before the camera and the model, and is closed with why the run ended.
    With several cameras, one run holds one session per camera."""

    def __init__(self, options: KioskOptions, store: KioskStore, console: Any) -> None:
        self.options, self.store, self.console = options, store, console
        self.sessions: dict[str, KioskSession] = {}  # by camera, in the order they were made
        self.reason = "error"  # until the run says otherwise
        self._server: Any = None
        self.forwarder: Any = None  # realtime.fleet.forwarder.Forwarder, with a central store
        self._forwarded: Any = None  # its status at close

    @classmethod
    def open(cls, options: KioskOptions, source_name: str, console: Any) -> "KioskRun":
        store_options = replace(options.store, outbox=True) if options.central else options.store
        store = KioskStore.open(options.data_dir, store_options, source=source_name, brackets=options.rules.brackets)
        run = cls(options, store, console)
        if options.central is not None:
            try:
                run.forwarder = _start_forwarder(options.data_dir, options.central, console)
            except BaseException:
                store.close("error")
                raise
        return run

    @property
    def session(self) -> KioskSession | None:
        """The first session (the only one of a single-camera run)."""
        return next(iter(self.sessions.values()), None)

    def session_for(self, source: FrameSource, camera: str = DEFAULT_CAMERA) -> KioskSession:
        """The session (a sink for the runner) of one stream, whose rows carry `camera`;
        the first call starts the dashboard. Each stream needs a camera id of its own."""
        camera = check_camera(camera)
        if camera in self.sessions:
            # the tracker's ids restart per stream: two streams under one id would clash
            raise UserError(f"two kiosk streams have the camera id {camera!r}: give each stream its own")
        self.store.add_camera(camera)
        session = KioskSession(self.store, self.options.rules, source.info.fps, source, camera=camera)
        self.sessions[camera] = session
        if self.options.dashboard and self._server is None:
            self._server = _start_dashboard(self.options, self.console)
        return session

    def ended(self, summary: RunOutcome) -> None:
        self.reason = "interrupted" if summary.interrupted else "finished"

    def result_line(self, summary: RunOutcome) -> str:
        visits = sum(s.visits for s in self.sessions.values())
        viewers = sum(s.viewers for s in self.sessions.values())
        state = "stopped" if summary.interrupted else "done"
        per_camera = ""
        if len(self.sessions) > 1:
            per_camera = " [" + ", ".join(f"{name}: {s.visits}" for name, s in self.sessions.items()) + "]"
        return f"kiosk {state}: {summary.frames} frames, {visits} visits ({viewers} viewers){per_camera} recorded in {self.store.path}"

    def forwarding_line(self) -> str | None:
        """After close: what the central store has of this kiosk, or None without one."""
        if self._forwarded is None:
            return None
        status = self._forwarded
        if status.last_error is None and status.backlog == 0:
            return f"forwarded to the central store: all sent ({status.sent_rows} rows)"
        waiting = "changes" if status.backlog is None else f"{status.backlog} changes"
        why = f" ({status.last_error})" if status.last_error else ""
        return f"forwarding: {waiting} still to send, kept in the store for the next run{why}"

    def __enter__(self) -> "KioskRun":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._server is not None:
                self._server.stop()
        finally:
            try:
                self.store.close(self.reason)
            finally:
                # after the store's close, so that the run's stop is sent too
                if self.forwarder is not None:
                    self._forwarded = self.forwarder.close()


# ---------------------------------------------------------------------- command line


def age_brackets(text: str) -> AgeBrackets:
    try:
        return AgeBrackets.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("kiosk (audience profiling; anonymous statistics only, no images are stored)")
    g.add_argument("--kiosk", action="store_true", help="record visits, dwell and attention to a SQLite store (no window)")
    g.add_argument("--data-dir", type=Path, help="kiosk store folder (created if missing; required with --kiosk)")
    g.add_argument("--min-dwell", type=non_negative_float, default=2.0, help="seconds in view for a person to count as a visit (default 2)")
    g.add_argument("--min-glance", type=non_negative_float, default=0.5, help="seconds facing the screen for a glance (default 0.5)")
    g.add_argument("--retention-days", type=non_negative_float, default=90.0, help="drop visit rows after this many days, keeping per-minute aggregates; 0 keeps them for good (default 90)")
    g.add_argument("--age-brackets", type=age_brackets, default=AgeBrackets(), metavar="EDGES", help="bracket boundaries in years (default 18,25,35,45,55,65: under 18, 18-24, ..., 65+)")
    g.add_argument("--dashboard", action="store_true", help="serve the live dashboard, JSON API and CSV export")
    g.add_argument("--dashboard-host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    g.add_argument("--dashboard-port", type=port_number, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    g.add_argument("--dashboard-token", metavar="TOKEN", help="require this access token on every dashboard request (better: set AGEGENDER_DASHBOARD_TOKEN, which other users cannot see in the process list)")
    g.add_argument("--central", metavar="URL", help="forward the store's rows to a fleet's central PostgreSQL store, postgresql://ROLE@HOST/DB (better: set AGEGENDER_CENTRAL, which other users cannot see in the process list)")
    g.add_argument("--kiosk-id", metavar="ID", help="this kiosk's id in the fleet (required with --central)")
    g.add_argument("--site", metavar="NAME", help="this kiosk's site in the fleet (e.g. a store)")
    g.add_argument("--location", metavar="NAME", help="its location within the site (e.g. entrance)")
    g.add_argument("--dashboard-allow-host", action="append", default=[], metavar="NAME", help="a further host name the dashboard may be opened under (repeatable; the bound address and, on loopback, localhost always work)")


def options_from_args(args: argparse.Namespace) -> KioskOptions:
    if args.data_dir is None:
        raise UserError("--kiosk needs --data-dir (the folder for the kiosk's store)")
    import os

    from .dashboard import resolve_token

    if not args.dashboard and (args.dashboard_token is not None or args.dashboard_allow_host):
        raise UserError("--dashboard-token and --dashboard-allow-host need --dashboard")
    rules = VisitRules(min_dwell_s=args.min_dwell, min_glance_s=args.min_glance, brackets=args.age_brackets)
    central = central_from_args(args, os.environ)
    return KioskOptions(
        data_dir=args.data_dir,
        rules=rules,
        store=StoreOptions(retention_days=args.retention_days or None),
        dashboard=args.dashboard,
        dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port,
        dashboard_token=resolve_token(args.dashboard_token, os.environ) if args.dashboard else None,
        dashboard_allowed_hosts=tuple(args.dashboard_allow_host),
        central=central,
    )


def central_from_args(args: argparse.Namespace, environ: Any) -> CentralOptions | None:
    """The forwarding options, from --central or $AGEGENDER_CENTRAL; None for a kiosk on its own."""
    from ..fleet.roles import check_kiosk_id, check_labels
    from ..fleet.urls import CENTRAL_ENV, resolve_central

    url = resolve_central(args.central, environ)
    labels = [f for f, v in (("--kiosk-id", args.kiosk_id), ("--site", args.site), ("--location", args.location)) if v is not None]
    if url is None:
        if labels:
            raise UserError(f"{', '.join(labels)} {'needs' if len(labels) == 1 else 'need'} --central (or ${CENTRAL_ENV})")
        return None
    if args.kiosk_id is None:
        raise UserError(f"a central store (--central or ${CENTRAL_ENV}) needs --kiosk-id, this kiosk's id in the fleet")
    check_kiosk_id(args.kiosk_id)
    check_labels(args.site, args.location)
    return CentralOptions(url, args.kiosk_id, args.site, args.location)


def _start_forwarder(data_dir: Path, central: CentralOptions, console: Any) -> Any:
    from ..fleet.forwarder import Forwarder, ForwarderOptions
    from ..fleet.urls import display_url

    forwarder = Forwarder.create_from_options(
        ForwarderOptions(data_dir, central.url, central.kiosk_id, central.site, central.location, interval_s=central.interval_s)
    )
    forwarder.start()
    console.print(f"forwarding to {display_url(central.url)} as kiosk {central.kiosk_id}", markup=False, soft_wrap=True)
    return forwarder


def _start_dashboard(options: KioskOptions, console: Any) -> Any:
    from .dashboard import DashboardServer

    server = DashboardServer.start(
        options.data_dir,
        options.dashboard_host,
        options.dashboard_port,
        token=options.dashboard_token,
        allowed_hosts=options.dashboard_allowed_hosts,
    )
    warning = server.exposure_warning()
    if warning:
        console.print(warning, markup=False, soft_wrap=True)
    console.print(f"dashboard: {server.url}{' (token required)' if options.dashboard_token else ''}")
    return server
