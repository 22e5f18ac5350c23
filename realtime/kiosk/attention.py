"""Head pose from BlazeFace's six keypoints, and whether a face is looking at the screen.

BlazeFace gives eye centres, nose tip, mouth centre and the two tragions (ears), in
image pixels. Under a weak-perspective camera a rigid head rotated by yaw θ and pitch φ
moves those points in ways a generic 3D face predicts:

* yaw: the nose tip sits in front of the eyes (depth ≈ 0.45 eye distances) and of the
  ears, so turning shifts it sideways off the eyes' and the ears' midpoints by
  depth · tan θ in units of the projected eye (or half-ear) distance; and the eye
  distance itself shrinks by cos θ against the eye-to-mouth height (foreshortening),
  which still registers when the nose cue is fooled;
* pitch: the nose tip also sits in front of the eye-to-mouth line, so nodding moves it
  along that line: the nose's fraction of the eye-to-mouth height changes with tan φ;
* roll: the angle of the eye axis; it does not affect attention (a tilted head still
  looks at the screen), and the other two are measured in the eye-aligned frame.

The constants come from the generic face model used for PnP head pose (eyes ±150,
mouth 320 below the eyes and nose tip 135 in front of the eyes, in its units) and were
checked on BlazeFace keypoints of 592 portraits from ../shared/data/faces: median
mouth drop 1.08 eye distances (model: 1.07), median nose fraction 0.55 (model: 0.53);
the ear cue's depth (0.87) was fitted there against the eye cue (correlation 0.97), and
the tragions sit 2.06 eye distances apart, 0.25 below the eye line. `project` is the
exact inverse of `head_pose` on that model, which the tests use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# nose-tip depth in front of the eye centres / eye distance
EYE_DEPTH = 0.45
# nose-tip depth in front of the tragions / half the tragion distance (fitted)
EAR_DEPTH = 0.87
# tragions: half their distance, and their drop below the eye line / eye distance (measured)
EAR_HALF = 1.03
EAR_DROP = 0.25
# mouth drop below the eye line / eye distance, facing the camera
MOUTH_DROP = 1.077
# the nose tip's fraction of the eye-to-mouth height, facing the camera
NOSE_FRACTION = 0.55
# nose-tip and mouth depth in front of the eyes / eye-to-mouth height
NOSE_DEPTH_V = EYE_DEPTH / MOUTH_DROP
MOUTH_DEPTH_V = 0.03


@dataclass(frozen=True)
class HeadPose:
    """Degrees. yaw > 0: turned toward the subject's left; pitch > 0: chin up."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class AttentionOptions:
    # a face counts as looking at the screen within these angles; the camera sits on the
    # screen, so looking at the content is a few degrees off the camera axis
    max_yaw: float = 30.0
    max_pitch: float = 25.0
    # a face whose keypoints give no head pose counts as looking when the scheduler's
    # frontalness (1: facing the camera, 0: profile; 1 without keypoints) reaches this
    fallback_frontal: float = 0.6


Point = Sequence[float]


def head_pose(keypoints: Sequence[Point] | None) -> HeadPose | None:
    """Yaw, pitch and roll from BlazeFace's keypoints, or None if they are unusable.

    Order: right eye, left eye, nose tip, mouth, right ear, left ear ("right" is the
    subject's right, on the image's left).
    """
    if keypoints is None or len(keypoints) < 6:
        return None
    pts = [(float(p[0]), float(p[1])) for p in keypoints[:6]]
    if not all(math.isfinite(v) for p in pts for v in p):
        return None
    right_eye, left_eye, nose, mouth, right_ear, left_ear = pts
    ax, ay = left_eye[0] - right_eye[0], left_eye[1] - right_eye[1]
    eye_dist = math.hypot(ax, ay)
    if eye_dist < 1e-6:
        return None
    ux, uy = ax / eye_dist, ay / eye_dist  # along the eyes, toward the subject's left
    nx, ny = -uy, ux  # down the face
    mid = ((right_eye[0] + left_eye[0]) / 2, (right_eye[1] + left_eye[1]) / 2)

    def along(p: tuple[float, float], origin: tuple[float, float]) -> tuple[float, float]:
        dx, dy = p[0] - origin[0], p[1] - origin[1]
        return dx * ux + dy * uy, dx * nx + dy * ny

    nose_x, nose_y = along(nose, mid)
    _, mouth_y = along(mouth, mid)
    roll = math.degrees(math.atan2(uy, ux))

    pitch = _pitch(nose_y, mouth_y)
    yaw = _yaw(nose_x / eye_dist, _ear_ratio(nose, right_ear, left_ear, along), mouth_y / eye_dist, pitch)
    return HeadPose(yaw=yaw, pitch=pitch, roll=roll)


def _ear_ratio(nose, right_ear, left_ear, along) -> float | None:
    ear_mid = ((right_ear[0] + left_ear[0]) / 2, (right_ear[1] + left_ear[1]) / 2)
    half = math.hypot(left_ear[0] - right_ear[0], left_ear[1] - right_ear[1]) / 2
    if half < 1e-6:
        return None
    return along(nose, ear_mid)[0] / half


def _pitch(nose_y: float, mouth_y: float) -> float:
    if mouth_y <= 1e-6:
        return 0.0
    r = nose_y / mouth_y
    # r(φ) = (NOSE_FRACTION - NOSE_DEPTH_V tan φ) / (1 - MOUTH_DEPTH_V tan φ), solved for tan φ
    t = (NOSE_FRACTION - r) / (NOSE_DEPTH_V - r * MOUTH_DEPTH_V)
    return math.degrees(math.atan(t))


def _yaw(nose_eye: float, nose_ear: float | None, mouth_drop: float, pitch: float) -> float:
    phi = math.radians(pitch)
    # nodding changes how far the nose stands out in front of the eyes and ears, which
    # is what a turn moves sideways
    nose_drop = NOSE_FRACTION * MOUTH_DROP
    eye_depth = nose_drop * math.sin(phi) + EYE_DEPTH * math.cos(phi)
    ear_depth = (nose_drop - EAR_DROP) / EAR_HALF * math.sin(phi) + EAR_DEPTH * math.cos(phi)
    tangents = [nose_eye / eye_depth] + ([] if nose_ear is None else [nose_ear / ear_depth])
    from_nose = math.degrees(math.atan(sum(tangents) / len(tangents)))
    # foreshortening: the eye distance shrinks with cos(yaw) while the eye-to-mouth
    # height shrinks with cos(pitch); it gives the size of the turn, not its side
    if mouth_drop <= 1e-6:
        return from_nose
    phi = math.radians(pitch)
    level = MOUTH_DROP * (math.cos(phi) - MOUTH_DEPTH_V * math.sin(phi))
    cos_yaw = min(1.0, level / mouth_drop)
    from_width = math.degrees(math.acos(max(cos_yaw, 0.0)))
    if from_width <= abs(from_nose):
        return from_nose
    return math.copysign(from_width, from_nose) if from_nose else from_width


def is_attentive(pose: HeadPose, options: AttentionOptions = AttentionOptions()) -> bool:
    return abs(pose.yaw) <= options.max_yaw and abs(pose.pitch) <= options.max_pitch


def face_attentive(keypoints: Sequence[Point] | None, frontal: float, options: AttentionOptions = AttentionOptions()) -> bool:
    """Attention from the keypoints' head pose; from the face's frontalness when they give none."""
    pose = head_pose(keypoints)
    return frontal >= options.fallback_frontal if pose is None else is_attentive(pose, options)


def project(yaw: float, pitch: float, roll: float = 0.0, scale: float = 1.0, centre: tuple[float, float] = (0.0, 0.0)) -> list[tuple[float, float]]:
    """The six keypoints of the generic face at a given pose (weak perspective).

    The inverse of `head_pose` for tests and documentation: model units, eyes 300 apart,
    image y down.
    """
    ear_half = EAR_HALF * 300
    mouth_drop = MOUTH_DROP * 300
    nose_depth = EYE_DEPTH * 300
    # (x: toward the subject's left, y: down, z: toward the camera), eyes at y = z = 0
    model = [
        (-150.0, 0.0, 0.0),  # right eye
        (150.0, 0.0, 0.0),  # left eye
        (0.0, NOSE_FRACTION * mouth_drop, nose_depth),  # nose tip
        (0.0, mouth_drop, MOUTH_DEPTH_V * mouth_drop),  # mouth
        (-ear_half, EAR_DROP * 300, nose_depth - EAR_DEPTH * ear_half),  # right ear
        (ear_half, EAR_DROP * 300, nose_depth - EAR_DEPTH * ear_half),  # left ear
    ]
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    cr, sr = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    out = []
    for x, y, z in model:
        # the head's own axes in turn: nod (chin up brings the nose up, -y), then turn
        # (brings the nose toward +x), then tilt in the image plane
        y, z = y * cp - z * sp, y * sp + z * cp
        x, z = x * cy + z * sy, -x * sy + z * cy
        x, y = x * cr - y * sr, x * sr + y * cr
        out.append((centre[0] + scale * x, centre[1] + scale * y))
    return out
