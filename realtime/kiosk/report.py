"""Audience reports over a period: totals, brackets by gender, dwell and attention
distributions, the hourly profile, as JSON, CSV or a self-contained HTML page.

    python -m realtime.kiosk report --data-dir DIR --from 2024-05-01 --to 2024-05-31 --format html --out may.html
    python -m realtime.kiosk report --data-dir DIR --camera entrance     (one camera's figures)
    python -m realtime.kiosk report --store postgresql://reader@central/fleet --site paris   (the fleet's)

On the fleet's central store the figures are the sums over its kiosks (or those that
--site, --location and --kiosk name), and the report adds a per-site comparison.

Everything comes from the per-minute aggregates, which outlive the visit rows, so a
report over a period older than the retention still has its figures. Times given
without a zone are the kiosk's local time; a bare date as --to means the end of that day.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Callable

from ..errors import UserError
from .queries import DayRow, GapRow, GenderCounts, HourRow, RunRow, SiteRow, StoreReader
from .visits import ATTENTION_EDGES, DWELL_EDGES, GENDERS, Totals, bin_labels

DEFINITIONS = {
    "visit": "a person in view for at least the minimum dwell; visits = OTS (opportunities to see)",
    "dwell_time": "first to last frame the person was seen",
    "glance": "an unbroken span facing the screen (head yaw and pitch within limits) of at least the minimum glance",
    "attention_time": "total duration of a visit's glances",
    "viewer": "a visit with at least one glance",
    "attention_rate": "viewers / visits",
    "average_attention_s": "total attention time / viewers",
    "average_dwell_s": "total dwell time / visits",
}


@dataclass(frozen=True)
class Report:
    start: float
    end: float
    generated_at: float
    totals: Totals
    brackets: dict[str, GenderCounts]
    dwell: list[int]  # visits per DWELL_EDGES bin
    attention: list[int]  # viewers per ATTENTION_EDGES bin
    hourly: list[HourRow]
    daily: list[DayRow]
    runs: list[RunRow]
    gaps: list[GapRow]
    camera: str | None = None  # the one camera reported on; None: all of them, summed
    cameras: dict[str, Totals] = field(default_factory=dict)  # per camera with visits in the period
    central: bool = False  # of the fleet's central store
    scope: dict[str, str] = field(default_factory=dict)  # central: the site, location or kiosk reported on
    sites: list[SiteRow] = field(default_factory=list)  # central: per site in scope


# The years a report or export may name. The store's times are seconds since the epoch,
# so nothing is stored before 1970; the upper bound keeps every time the period can
# produce (the day after a bare --to, a zone's offset, local-time conversions in SQLite
# and in iso()) far inside what datetime represents, so an absurd date is a clear error
# rather than an OverflowError deep inside a query.
YEARS = (1970, 2999)
# a central store's report says which part of the fleet it covers
SCOPE_KEYS = ("site", "location", "kiosk")
SITE_FIGURES = ("kiosks", "visits", "viewers", "attention_rate", "average_dwell_s")
_EXAMPLE = "e.g. 2024-05-01 or 2024-05-01T09:30"


def parse_time(text: str, *, end: bool = False) -> float:
    """ISO date or date-time to epoch seconds; no zone means local time.

    A bare date is its midnight, or the next midnight for the end of a range, so that
    --from 2024-05-01 --to 2024-05-01 is that whole day. Anything that is not an ISO
    date or time, or is outside YEARS, is a UserError (one line), so every caller (the
    report command, each dashboard endpoint) refuses it the same way.
    """
    text = text.strip()
    if text[:4].isdigit():  # year 0000 or 9999: say what is wrong, not "not a date"
        _check_year(int(text[:4]), text)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        _check_year(day.year, text)
        if end:
            day += timedelta(days=1)
        return datetime(day.year, day.month, day.day).timestamp()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"not an ISO date or time: {_shown(text)} ({_EXAMPLE})") from None
    _check_year(moment.year, text)
    return moment.timestamp()  # naive: local time


def _check_year(year: int, text: str) -> None:
    if not YEARS[0] <= year <= YEARS[1]:
        raise UserError(f"date out of range: {_shown(text)} (years {YEARS[0]} to {YEARS[1]})")


def _shown(text: str, limit: int = 40) -> str:
    # the text may come from a URL: never echo a megabyte of it back
    return repr(text if len(text) <= limit else text[:limit] + "...")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def resolve_range(reader: StoreReader, start: str | None, end: str | None, now: float | None = None) -> tuple[float, float]:
    now = time.time() if now is None else now
    t1 = parse_time(end, end=True) if end else now
    # an empty store still reports (zeros) over the day before --to
    t0 = parse_time(start) if start else min(reader.first_minute() or t1 - 86400.0, t1 - 60.0)
    if t1 <= t0:
        raise UserError(f"the report period is empty: --to ({iso(t1)}) is not after --from ({iso(t0)})")
    return t0, t1


def build_report(reader: StoreReader, start: float, end: float) -> Report:
    return Report(
        start=start,
        end=end,
        generated_at=time.time(),
        totals=reader.totals(start, end),
        brackets=reader.brackets(start, end),
        dwell=reader.histogram("dwell", start, end),
        attention=reader.histogram("attention", start, end),
        hourly=reader.hourly_profile(start, end),
        daily=reader.daily(start, end),
        runs=reader.runs(start, end),
        gaps=reader.gaps(start, end),
        camera=reader.camera,
        cameras=reader.camera_totals(start, end),
        central=reader.central,
        scope={k: v for k, v in (("site", reader.site), ("location", reader.location), ("kiosk", reader.kiosk)) if v is not None},
        sites=reader.sites(start, end),
    )


def to_dict(report: Report) -> dict[str, Any]:
    brackets = {b: {**asdict(n), "total": n.total} for b, n in report.brackets.items()}
    camera_gaps = [g for g in report.gaps if g.kind == "camera"]
    # only a central store's report has a scope and sites: a kiosk's own stays as it was
    fleet: dict[str, Any] = {}
    if report.central:
        fleet = {**{k: report.scope.get(k) for k in SCOPE_KEYS}, "sites": [asdict(s) for s in report.sites]}
    return {
        "from": iso(report.start),
        "to": iso(report.end),
        "generated_at": iso(report.generated_at),
        "camera": report.camera,
        **fleet,
        **report.totals.as_dict(),
        "cameras": {name: {"visits": t.visits, "viewers": t.viewers} for name, t in report.cameras.items()},
        "brackets": brackets,
        "dwell_distribution": [{"bin": label, "visits": n} for label, n in zip(bin_labels(DWELL_EDGES), report.dwell)],
        "attention_distribution": [{"bin": label, "viewers": n} for label, n in zip(bin_labels(ATTENTION_EDGES), report.attention)],
        "hourly": [asdict(h) for h in report.hourly],
        "daily": [asdict(d) for d in report.daily],
        "coverage": {
            "runs": len(report.runs),
            "crashed_runs": sum(r.stop_reason == "crashed" for r in report.runs),
            "camera_gaps": len(camera_gaps),
            "camera_gap_s": round(sum(g.end - g.start for g in camera_gaps), 1),
        },
        "definitions": DEFINITIONS,
    }


def to_json(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2) + "\n"


def to_csv(report: Report) -> str:
    """One tidy table: section, key, group, value (spreadsheets pivot it as they like)."""
    d = to_dict(report)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["section", "key", "group", "value"])
    w.writerow(["period", "from", "", d["from"]])
    w.writerow(["period", "to", "", d["to"]])
    w.writerow(["period", "camera", "", d["camera"] or ""])
    for key in SCOPE_KEYS if "sites" in d else ():
        w.writerow(["period", key, "", d[key] or ""])
    for key in ("visits", "viewers", "glances", "attention_rate", "average_dwell_s", "average_attention_s", "total_dwell_s", "total_attention_s"):
        w.writerow(["totals", key, "", "" if d[key] is None else d[key]])
    for name, counts in d["cameras"].items():
        for key in ("visits", "viewers"):
            w.writerow(["cameras", name, key, counts[key]])
    for row in d.get("sites", ()):
        for key in SITE_FIGURES:
            w.writerow(["sites", row["site"], key, "" if row[key] is None else row[key]])
    for bracket, counts in d["brackets"].items():
        for gender in (*GENDERS, "total"):
            w.writerow(["brackets", bracket, gender, counts[gender]])
    for row in d["dwell_distribution"]:
        w.writerow(["dwell_distribution", row["bin"], "visits", row["visits"]])
    for row in d["attention_distribution"]:
        w.writerow(["attention_distribution", row["bin"], "viewers", row["viewers"]])
    for row in d["hourly"]:
        for key in ("visits", "viewers", "attention_rate", "average_dwell_s", "average_attention_s"):
            w.writerow(["hourly", f"{row['hour']:02d}", key, "" if row[key] is None else row[key]])
    for row in d["daily"]:
        for key in ("visits", "viewers"):
            w.writerow(["daily", row["date"], key, row[key]])
    for key, value in d["coverage"].items():
        w.writerow(["coverage", key, "", value])
    return out.getvalue()


# ------------------------------------------------------------------------ html

_COLOURS = {"female": "#d9668f", "male": "#4a7fc1", "unknown": "#a0a0a0"}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("the html report needs matplotlib: pip install matplotlib") from None
    return plt


def _png(plt: Any, size: tuple[float, float], draw: Callable[[Any], None]) -> str:
    """One chart drawn by draw(axes), as base64 PNG."""
    fig, ax = plt.subplots(figsize=size)
    try:
        draw(ax)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _draw_brackets(ax: Any, brackets: dict[str, GenderCounts]) -> None:
    labels = list(brackets) or ["(none)"]
    bottom = [0] * len(labels)
    for g in GENDERS:
        values = [getattr(brackets.get(b, GenderCounts()), g) for b in labels]
        ax.bar(labels, values, bottom=bottom, label=g, color=_COLOURS[g])
        bottom = [a + b for a, b in zip(bottom, values)]
    ax.set_title("Visits by age bracket and gender")
    ax.set_ylabel("visits")
    ax.legend()


def _draw_hourly(ax: Any, hourly: list[HourRow]) -> None:
    hours = [h.hour for h in hourly]
    ax.bar(hours, [h.visits for h in hourly], color="#4a7fc1", label="visits")
    ax.bar(hours, [h.viewers for h in hourly], color="#f0a030", width=0.5, label="viewers")
    ax.set_xticks(range(0, 24, 2))
    ax.set_xlabel("hour of day")
    ax.set_title("Hourly profile")
    ax.legend()


def _draw_distribution(ax: Any, key: str, counts: list[int], edges: tuple[float, ...], what: str) -> None:
    ax.bar(bin_labels(edges), counts, color="#5a9e6f")
    ax.set_title(f"{key.capitalize()} time distribution")
    ax.set_ylabel(what)
    ax.tick_params(axis="x", labelrotation=30)


def _plots(report: Report) -> dict[str, str]:
    plt = _pyplot()
    return {
        "brackets": _png(plt, (7, 3.2), lambda ax: _draw_brackets(ax, report.brackets)),
        "hourly": _png(plt, (7, 3.2), lambda ax: _draw_hourly(ax, report.hourly)),
        "dwell": _png(plt, (7, 3), lambda ax: _draw_distribution(ax, "dwell", report.dwell, DWELL_EDGES, "visits")),
        "attention": _png(plt, (7, 3), lambda ax: _draw_distribution(ax, "attention", report.attention, ATTENTION_EDGES, "viewers")),
    }


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else html.escape(str(v))

    head = "".join(f"<th>{cell(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _percent(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _round(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def to_html(report: Report) -> str:
    d = to_dict(report)
    plots = _plots(report)
    rate = d["attention_rate"]
    totals = _table(["figure", "value"], [
        ["visits (OTS)", d["visits"]],
        ["viewers", d["viewers"]],
        ["attention rate", _percent(rate)],
        ["average dwell (s)", _round(d["average_dwell_s"])],
        ["average attention per viewer (s)", _round(d["average_attention_s"])],
        ["glances", d["glances"]],
    ])
    brackets = _table(["bracket", *GENDERS, "total"], [[b, *(c[g] for g in GENDERS), c["total"]] for b, c in d["brackets"].items()])
    hourly = _table(["hour", "visits", "viewers", "attention rate", "avg dwell (s)", "avg attention (s)"], [
        [f"{h['hour']:02d}:00", h["visits"], h["viewers"], _percent(h["attention_rate"]), _round(h["average_dwell_s"]), _round(h["average_attention_s"])]
        for h in d["hourly"] if h["visits"]
    ])
    camera = f", camera {html.escape(d['camera'])}" if d["camera"] else ""
    cameras = _table(["camera", "visits", "viewers"], [[name, c["visits"], c["viewers"]] for name, c in d["cameras"].items()])
    cameras = f"<h2>Cameras</h2>{cameras}" if len(d["cameras"]) > 1 else ""
    sites = ""
    if "sites" in d:
        sites = "<h2>Sites</h2>" + _table(["site", "kiosks", "visits", "viewers", "attention rate", "avg dwell (s)"], [
            [s["site"] or "(no site)", s["kiosks"], s["visits"], s["viewers"], _percent(s["attention_rate"]), _round(s["average_dwell_s"])]
            for s in d["sites"]
        ])
        scope = ", ".join(f"{k} {html.escape(d[k])}" for k in SCOPE_KEYS if d[k])
        camera = f", {scope}{camera}" if scope else camera
    cov = d["coverage"]
    definitions = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in DEFINITIONS.items())

    def img(key: str, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{plots[key]}">'

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Audience report {html.escape(d['from'])} to {html.escape(d['to'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 60em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; display: block; margin: 0.5em 0 1.5em; }}
.note {{ color: #666; font-size: 0.9em; }}
</style></head><body>
<h1>Audience report</h1>
<p>{html.escape(d['from'])} to {html.escape(d['to'])}{camera} (generated {html.escape(d['generated_at'])})</p>
<h2>Totals</h2>{totals}
{sites}
{cameras}
<h2>Age brackets by gender</h2>{brackets}{img('brackets', 'visits by age bracket and gender')}
<h2>Hourly profile</h2>{img('hourly', 'hourly profile')}{hourly}
<h2>Dwell and attention</h2>{img('dwell', 'dwell time distribution')}{img('attention', 'attention time distribution')}
<h2>Coverage</h2>
<p>{cov['runs']} run(s), {cov['crashed_runs']} ended by a crash; {cov['camera_gaps']} camera gap(s), {cov['camera_gap_s']} s in all.</p>
<h2>Definitions</h2><ul>{definitions}</ul>
<p class="note">Ages and genders are statistical estimates from appearance. The kiosk stores no images and recognises no one.</p>
</body></html>
"""


FORMATS = {"json": to_json, "csv": to_csv, "html": to_html}


def render(report: Report, fmt: str) -> str:
    return FORMATS[fmt](report)
