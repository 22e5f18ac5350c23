"""The analyzer end to end on real video: identity, labels, batching, scheduling."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.analyzer import Analyzer, AnalyzerOptions
from realtime.sources import open_source
from tests.conftest import WALKING, WEBCAM, read_frames


def analyze(path, model_path, limit: int | None = None, **options):
    """The analyzer over the clip (its first `limit` frames when given), as the CLI runs it."""
    source = open_source(str(path))
    people, frames = [], []
    with source, Analyzer.create_from_options(AnalyzerOptions(model_path=model_path, device="cpu", fps=source.info.fps, **options)) as analyzer:
        for frame in source:
            if limit is not None and frame.index >= limit:
                break
            result = analyzer.process(frame.image, frame.index, frame.time)
            frames.append(result)
            people.extend(result.finished)
        people.extend(analyzer.finish())
    return people, frames, analyzer


@pytest.fixture(scope="module")
def webcam_run(model_path):
    return analyze(WEBCAM, model_path)


@pytest.fixture(scope="module")
def walking_run(model_path):
    """The three walkers with the default settings, shared by the tests that inspect it."""
    return analyze(WALKING, model_path)


def test_webcam_person_is_one_track_for_the_whole_clip(webcam_run):
    people, frames, _ = webcam_run
    assert len(people) == 1
    person = people[0]
    assert person.first_frame == 0 and person.last_frame == len(frames) - 1
    assert person.frames_seen == len(frames)


def test_webcam_person_is_a_young_adult_male(webcam_run):
    person = webcam_run[0][0]
    assert person.gender == "male" and person.gender_confidence >= 0.9
    assert 18 <= person.age <= 36, person.age


def test_scheduling_infers_a_fraction_of_frames(webcam_run):
    people, frames, analyzer = webcam_run
    person = people[0]
    assert 20 <= person.frames_inferred <= len(frames) / 5
    assert analyzer.faces_inferred == person.frames_inferred


def test_labels_appear_early_and_never_flip(webcam_run):
    _, frames, _ = webcam_run
    shown = [r.faces[0] for r in frames if r.faces]
    first_labelled = next(i for i, f in enumerate(shown) if f.gender is not None)
    assert first_labelled < 25  # within a second at 25 fps
    genders = {f.gender for f in shown[first_labelled:]}
    assert genders == {"male"}
    ages = [f.age for f in shown if f.age is not None]
    changes = sum(1 for a, b in zip(ages, ages[1:]) if a != b)
    assert changes <= len(ages) / 50, changes  # the shown age holds still between real changes


def test_three_walkers_are_three_labelled_people(walking_run):
    people, frames, _ = walking_run
    assert len(people) == 3, [p.to_event() for p in people]
    for person in people:
        assert person.frames_seen >= 30
        assert person.age is not None and 15 <= person.age <= 70


def test_three_walkers_are_two_women_and_a_man(walking_run):
    # ../shared/data/README.md: two women and a man; the pretrained heads called the
    # woman with glasses a man (P 0.80), the shipped model gets all three right
    people, _, _ = walking_run
    assert sorted(p.gender for p in people) == ["female", "female", "male"], [p.to_event() for p in people]


def test_batched_inference_equals_one_by_one(model, detector):
    frame = read_frames(WALKING)[20]
    from realtime.crops import face_crop

    found = detector.detect(frame)
    crops = np.array([face_crop(frame, b, k, model.input_size, model.metadata.crop_margin) for b, k in zip(found.xyxy, found.data["keypoints"])])
    assert len(crops) >= 2
    together = model.predict(crops)
    for i, crop in enumerate(crops):
        alone = model.predict(crop[None])
        assert abs(alone.age[0] - together.age[i]) < 1e-3
        assert abs(alone.p_male[0] - together.p_male[i]) < 1e-4


def test_detect_interval_follows_the_frame_rate():
    from realtime.analyzer import detect_interval

    assert [detect_interval(f) for f in (12.5, 15, 25, 29.97, 30, 60)] == [1, 1, 1, 1, 2, 4]
    assert detect_interval(float("nan")) == 1 and detect_interval(30, 1) == 1 and detect_interval(25, 3) == 3
    with pytest.raises(ValueError):
        detect_interval(30, 0)


def test_detecting_every_third_frame_keeps_the_webcam_person(webcam_run, model_path):
    # the same clip with the detector skipping two frames in three: the person stays one
    # track, labelled the same, shown on every frame, and the model runs only on the
    # frames the detector saw. The first 20 s (500 of 1337 frames) show all of that; the
    # whole clip's track is checked at the default interval above
    people, frames, analyzer = analyze(WEBCAM, model_path, limit=500, detect_every=3)
    assert len(frames) == 500
    assert len(people) == 1 and people[0].gender == "male"
    # against the age the default interval showed after the same 500 frames (28; the
    # whole clip's final estimate is 2 years older, so that is not the comparison)
    assert abs(people[0].age - webcam_run[1][499].faces[0].age) < 3
    assert all(len(r.faces) == 1 for r in frames[1:])
    assert all(not f.inferred for i, r in enumerate(frames) if i % 3 for f in r.faces)
    assert people[0].frames_seen <= len(frames) / 3 + 1


def test_boxes_between_detections_move_with_the_face(walking_run, model_path):
    # walkers come toward the camera: a box carried between detections keeps close to
    # where the detector puts it on the next detection frame
    _, every, analyzer = walking_run
    assert analyzer.detect_every == 1  # at 12.5 fps the default detects on every frame
    _, skipping, _ = analyze(WALKING, model_path, detect_every=2)
    import supervision as sv

    ious = []
    for full, coasted in zip(every[5::2][:15], skipping[5::2][:15]):  # odd frames: no detector
        a = np.array([f.box for f in full.faces], np.float32).reshape(-1, 4)
        b = np.array([f.box for f in coasted.faces], np.float32).reshape(-1, 4)
        if len(a) and len(b):
            ious.extend(sv.box_iou_batch(b, a).max(axis=1))
    assert len(ious) >= 20 and float(np.median(ious)) > 0.7, ious
