"""Kiosk mode: the analyzer's results become visits in the store, with the dashboard beside.

    python run_camera.py --source 0 --kiosk --data-dir /var/lib/kiosk --dashboard

run_camera.py only parses the options (`add_arguments`) and hands over (`run_from_args`).
Frames are pumped by the shared runner; the analyzer is wrapped so that every frame's
result, and the people still in view when the run ends, reach the session, which turns
them into visits and writes them as they happen (see store.py for durability).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..errors import UserError
from .store import KioskStore, StoreOptions
from .visits import AgeBrackets, Visit, VisitBuilder, VisitRules

if TYPE_CHECKING:  # run_camera.py imports this module to build its parser: keep it light
    import numpy as np

    from ..analyzer import Analyzer, FrameResult, TrackSummary
    from ..sources import FrameSource

DEFAULT_PORT = 8765


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


class KioskSession:
    """Frame results in, visits, camera gaps and the live count out to the store."""

    def __init__(
        self,
        store: KioskStore,
        rules: VisitRules,
        fps: float,
        source: FrameSource | None = None,
        origin: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.builder = VisitBuilder(rules, fps)
        self.source = source
        # wall-clock time of the source's time 0: set at the first frame unless given
        self.origin = origin
        self.clock = clock
        self.faces_now = 0
        self._pending: list[Visit] = []
        self._gaps_recorded = 0
        self.visits = 0
        self.viewers = 0

    def frame(self, result: FrameResult) -> None:
        now = self.clock()
        # stamps never run ahead of the clock: a file read faster than real time is
        # stamped as if it had just been watched (a live source keeps its origin)
        latest = now - result.time
        self.origin = latest if self.origin is None else min(self.origin, latest)
        self.store.frames += 1
        self.faces_now = len(result.faces)
        self._pending.extend(self.builder.observe(result, self.origin))
        self._flush()
        self._record_gaps()
        # the visits in progress are checkpointed with the heartbeat, so that a kill loses
        # at most a heartbeat period of them too
        self.store.tick(self.faces_now, self.builder.people_now, now=now, open_visits=self._open_visits)

    def final(self, summaries: Iterable[TrackSummary]) -> None:
        """The people still in view when the run ends, and a camera gap still open."""
        if self.origin is None:
            self.origin = self.clock()
        self._pending.extend(self.builder.finish(summaries, self.origin))
        self.faces_now = 0
        self._flush()  # each visit replaces its checkpoint
        self._record_gaps(stopping=True)
        # no one is in view any more: no checkpoint may outlive the run
        self.store.tick(0, 0, now=self.clock(), force=True, open_visits=self._open_visits)

    def _open_visits(self) -> list[Visit]:
        assert self.origin is not None  # set by the first frame
        return self.builder.open_visits(self.origin)

    def _flush(self) -> None:
        if not self._pending:
            return
        # the store writes idempotently, so a flush cut by a signal is simply redone
        self.store.add_visits(self._pending)
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
            self.store.add_gap(self.origin + start, self.origin + end, "camera")
            self._gaps_recorded += 1


class KioskAnalyzer:
    """An Analyzer that also feeds a kiosk session; everything else is the analyzer's."""

    def __init__(self, analyzer: Analyzer, session: KioskSession) -> None:
        self._analyzer = analyzer
        self._session = session

    def process(self, image: np.ndarray, frame_index: int, time: float) -> FrameResult:
        result = self._analyzer.process(image, frame_index, time)
        self._session.frame(result)
        return result

    def finish(self) -> list[TrackSummary]:
        tracks = self._analyzer.finish()
        self._session.final(tracks)
        return tracks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._analyzer, name)


# ---------------------------------------------------------------------- command line


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


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
    g.add_argument("--dashboard-allow-host", action="append", default=[], metavar="NAME", help="a further host name the dashboard may be opened under (repeatable; the bound address and, on loopback, localhost always work)")


def options_from_args(args: argparse.Namespace) -> KioskOptions:
    if args.data_dir is None:
        raise UserError("--kiosk needs --data-dir (the folder for the kiosk's store)")
    import os

    from .dashboard import resolve_token

    if not args.dashboard and (args.dashboard_token is not None or args.dashboard_allow_host):
        raise UserError("--dashboard-token and --dashboard-allow-host need --dashboard")
    rules = VisitRules(min_dwell_s=args.min_dwell, min_glance_s=args.min_glance, brackets=args.age_brackets)
    return KioskOptions(
        data_dir=args.data_dir,
        rules=rules,
        store=StoreOptions(retention_days=args.retention_days or None),
        dashboard=args.dashboard,
        dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port,
        dashboard_token=resolve_token(args.dashboard_token, os.environ) if args.dashboard else None,
        dashboard_allowed_hosts=tuple(args.dashboard_allow_host),
    )


def run_from_args(args: argparse.Namespace, console: Any) -> int:
    """run_camera.py --kiosk: 0 done, 130 stopped by a signal, errors raised as UserError."""
    from ..analyzer import Analyzer, AnalyzerOptions
    from ..detection import DetectorOptions
    from ..runner import RunOptions, run as run_frames
    from ..scheduling import ScheduleOptions
    from ..sinks import check_outputs
    from ..redact import redact
    from ..sources import open_source
    from ..tracking import TrackerOptions
    from .store import store_file

    options = options_from_args(args)
    outputs = {"--output": args.output, "--events": args.events, "--frames": args.frames, "--summary": args.summary}
    check_outputs(args.source, outputs, {"--model": args.model, "--data-dir": store_file(options.data_dir)})
    # the store first: a bad data dir fails at once, before the camera and the model
    store = KioskStore.open(options.data_dir, options.store, source=redact(str(args.source)), brackets=options.rules.brackets)
    reason = "error"
    try:
        with open_source(args.source, folder_fps=args.folder_fps, give_up_after_s=args.give_up_after) as source:
            analyzer_options = AnalyzerOptions(
                model_path=args.model,
                device=args.device,
                fps=source.info.fps,
                detector=DetectorOptions(model=args.detector, min_confidence=args.min_confidence, tile_size=args.tile_size),
                tracker=TrackerOptions(timeout_s=args.track_timeout),
                schedule=ScheduleOptions(refresh_frames=args.refresh),
                scan_interval=args.scan_interval,
                detect_every=args.detect_every,
            )
            with Analyzer.create_from_options(analyzer_options) as analyzer:
                session = KioskSession(store, options.rules, source.info.fps, source)
                info = source.info
                console.print(
                    f"kiosk: {info.kind} {info.name} {info.width}x{info.height} @ {info.fps:g} fps | store {store.path} (run {store.run_id}) | "
                    f"providers: {', '.join(analyzer.providers)}",
                    soft_wrap=True,
                )
                server = _start_dashboard(options, console) if options.dashboard else None
                try:
                    run_options = RunOptions(
                        output=args.output,
                        events=args.events,
                        frames=args.frames,
                        summary=args.summary,
                        display=False,  # the screen belongs to the signage
                        max_frames=args.max_frames,
                        progress=not args.quiet,
                        keep_people=False,
                    )
                    report = run_frames(source, KioskAnalyzer(analyzer, session), run_options, console=console)  # type: ignore[arg-type]
                finally:
                    if server is not None:
                        server.stop()
        interrupted = bool(report.summary["interrupted"])
        reason = "interrupted" if interrupted else "finished"
    finally:
        store.close(reason)
    console.print(
        f"kiosk {'stopped' if interrupted else 'done'}: {report.summary['frames']} frames, "
        f"{session.visits} visits ({session.viewers} viewers) recorded in {store.path}"
    )
    return 130 if interrupted else 0


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
