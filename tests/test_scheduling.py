"""Which faces get inferred: quality gates and refresh rules."""

import numpy as np

from realtime.scheduling import Candidate, FaceQuality, InferenceLog, ScheduleOptions, assess, due, frontalness, select
from tests.conftest import WEBCAM, read_frames

OPTS = ScheduleOptions(refresh_frames=10, warmup_frames=2)


def quality(score=0.5, usable=True):
    return FaceQuality(size_px=80, sharpness=100, frontal=0.9, score=score, usable=usable)


def frontal_points(yaw_shift=0.0, ear_shift=0.0):
    # right eye, left eye, nose, mouth, right ear, left ear (image coordinates)
    return np.array(
        [[40, 50], [60, 50], [50 + yaw_shift, 62], [50 + yaw_shift / 2, 72], [25 + ear_shift, 55], [75 + ear_shift, 55]],
        dtype=np.float32,
    )


def test_frontal_face_scores_high_and_profile_low():
    assert frontalness(frontal_points()) > 0.9
    profile = frontal_points(yaw_shift=12, ear_shift=25)
    assert frontalness(profile) < 0.3


def test_real_face_quality(detector):
    frame = read_frames(WEBCAM, 1)[0]
    found = detector.detect(frame)
    q = assess(frame, found.xyxy[0], found.data["keypoints"][0], ScheduleOptions())
    assert q.usable and q.size_px > 60 and q.frontal > 0.6 and 0 < q.score <= 1


def test_blurred_face_is_not_usable(detector):
    import cv2

    frame = read_frames(WEBCAM, 1)[0]
    found = detector.detect(frame)
    blurred = cv2.GaussianBlur(frame, (0, 0), 8)
    sharp_q = assess(frame, found.xyxy[0], found.data["keypoints"][0], ScheduleOptions())
    blur_q = assess(blurred, found.xyxy[0], found.data["keypoints"][0], ScheduleOptions())
    assert blur_q.sharpness < sharp_q.sharpness / 4
    assert not blur_q.usable


def test_tiny_face_is_not_usable():
    frame = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    q = assess(frame, np.array([10, 10, 22, 22]), frontal_points(), ScheduleOptions())
    assert not q.usable


def test_new_track_is_due_and_unusable_never():
    assert due(Candidate(1, quality(), None, 0.0), OPTS)
    assert not due(Candidate(1, quality(usable=False), None, 0.0), OPTS)


def test_refresh_rules():
    settled = dict(best_score=0.5, settled=True)
    assert not due(Candidate(1, quality(0.5), 5, **settled), OPTS)
    assert due(Candidate(1, quality(0.5), 10, **settled), OPTS)
    assert due(Candidate(1, quality(0.8), 1, **settled), OPTS)  # clearly better view
    assert due(Candidate(1, quality(0.5), 2, best_score=0.5, settled=False), OPTS)  # still warming up


def test_an_unsettled_track_is_inferred_on_every_detection_frame():
    # a small face's views weigh little; it needs each one to get a label while passing by
    warming = Candidate(1, quality(0.2), 1, best_score=0.2, settled=False)
    assert due(warming, ScheduleOptions())
    assert not due(Candidate(1, quality(0.2), 1, best_score=0.2, settled=True), ScheduleOptions())


def test_select_prefers_new_then_stalest_and_caps():
    opts = ScheduleOptions(refresh_frames=1, max_per_frame=2)
    candidates = [Candidate(1, quality(), 3, 0.5, True), Candidate(2, quality(), None, 0.0), Candidate(3, quality(), 9, 0.5, True)]
    assert select(candidates, opts) == [2, 3]


def test_inference_log_turns_a_tracks_history_into_its_candidate():
    log = InferenceLog()
    assert log.candidate(4, quality(0.5), 7, False) == Candidate(4, quality(0.5), None, 0.0, False)
    log = log.after(7, quality(0.6)).after(9, quality(0.4))
    assert (log.count, log.last_frame, log.best_score) == (2, 9, 0.6)
    candidate = log.candidate(4, quality(0.5), 12, True)
    assert candidate.frames_since_inference == 3 and candidate.best_score == 0.6 and candidate.settled
    assert not due(candidate, OPTS)  # settled, fresh, and no better than its best view
