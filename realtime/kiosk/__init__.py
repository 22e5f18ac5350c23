"""Audience-profiling kiosk: visits, dwell and attention, by age bracket and gender.

    python run_camera.py --source 0 --kiosk --data-dir DIR [--dashboard]
    python -m realtime.kiosk report --data-dir DIR --from 2024-05-01 --to 2024-05-31 --format html
    python -m realtime.kiosk dashboard --data-dir DIR

Privacy: the kiosk keeps anonymous statistics only. No image, face crop, embedding or
other biometric template is stored or sent anywhere, and no one is identified or
recognised: a person who comes back is simply a new visit. Each visit row holds times,
dwell and attention durations, a glance count and the estimated age bracket and gender
with its confidence; visit rows are deleted after the retention period, leaving only
per-minute counts.

Modules: attention (head pose from the detector's keypoints), visits (the pure visit,
glance and bracket logic and the trade's definitions), store (the SQLite writer),
outbox (what a fleet kiosk has still to forward), tables and queries (the one query
layer over a kiosk's store or the fleet's central one), session (kiosk mode of
run_camera.py), dashboard (web page and API), report. Forwarding to a fleet's central
store is realtime.fleet. The memory soak is developer tooling: `python -m tooling.soak`.
"""

from .attention import AttentionOptions, HeadPose, head_pose, is_attentive
from .queries import StoreReader
from .store import KioskStore, StoreError, StoreOptions
from .visits import AgeBrackets, Totals, Visit, VisitBuilder, VisitRules

__all__ = [
    "AgeBrackets",
    "AttentionOptions",
    "HeadPose",
    "KioskStore",
    "StoreError",
    "StoreOptions",
    "StoreReader",
    "Totals",
    "Visit",
    "VisitBuilder",
    "VisitRules",
    "head_pose",
    "is_attentive",
]
