"""BlazeFace run by the MediaPipe Tasks FaceDetector: the shipped `FaceDetector`.

Two models ship in models/: `full` (full-range, sparse; small and distant faces) and
`short` (short-range; faces within about 2 m). Measured on the shared clips, full-range
found 2.9 of the 3 walkers per frame and short-range 0.5, and both found the webcam face
in every frame, so `full` is the default. BlazeFace sees a 192x192 (full) or 128x128
(short) version of its input; `realtime.tiling` takes care of large frames.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import supervision as sv

from ..detection import DetectorOptions, empty_detections, verified_detector_file
from ..errors import ModelError
from ..metadata import BLAZEFACE_KEYPOINTS

MODEL_FILES: dict[str, tuple[str, str]] = {
    "full": (
        "face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
    "short": (
        "face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
}
N_KEYPOINTS = len(BLAZEFACE_KEYPOINTS)


class MediaPipeFaceDetector:
    """BlazeFace, one pass over the image it is given (a frame, a tile or a mosaic)."""

    keypoint_layout = BLAZEFACE_KEYPOINTS

    def __init__(self, options: DetectorOptions, detector: object, input_size: int) -> None:
        self.options = options
        self.name = f"blazeface-{options.model}"
        self.input_size = input_size
        self._detector = detector

    @classmethod
    def check_options(cls, options: DetectorOptions) -> int:
        """The network's input side, from a verified model file (ModelError if missing or altered)."""
        return model_input_size(verified_model_path(options.model, options.model_dir))

    @classmethod
    def create_from_options(cls, options: DetectorOptions = DetectorOptions()) -> "MediaPipeFaceDetector":
        path = verified_model_path(options.model, options.model_dir)
        side = model_input_size(path)
        import_mediapipe()
        from mediapipe.tasks.python import BaseOptions, vision

        task_options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=options.min_confidence,
        )
        try:
            with native_stderr_silenced():
                instance = cls(options, vision.FaceDetector.create_from_options(task_options), side)
                # the first run logs its own warnings; take it here, on a blank frame
                instance.detect(np.zeros((64, 64, 3), np.uint8))
        except Exception as exc:  # mediapipe raises RuntimeError/ValueError with long texts
            raise ModelError(f"cannot load detector model {path}: {str(exc).splitlines()[0]}") from None
        return instance

    def detect(self, frame_bgr: np.ndarray) -> sv.Detections:
        import mediapipe as mp

        rgb = np.ascontiguousarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        result = self._detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))  # type: ignore[attr-defined]
        if not result.detections:
            return empty_detections(N_KEYPOINTS)
        h, w = rgb.shape[:2]
        boxes, scores, points = [], [], []
        for det in result.detections:
            bb = det.bounding_box
            boxes.append([bb.origin_x, bb.origin_y, bb.origin_x + bb.width, bb.origin_y + bb.height])
            scores.append(det.categories[0].score if det.categories else 0.0)
            kps = [(kp.x * w, kp.y * h) for kp in (det.keypoints or [])][:N_KEYPOINTS]
            kps += [(np.nan, np.nan)] * (N_KEYPOINTS - len(kps))
            points.append(kps)
        xyxy = np.asarray(boxes, np.float32)
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        keypoints = np.asarray(points, np.float32)
        return sv.Detections(xyxy=xyxy, confidence=np.asarray(scores, np.float32), data={"keypoints": keypoints})

    def close(self) -> None:
        if self._detector is not None:
            with native_stderr_silenced():
                self._detector.close()  # type: ignore[attr-defined]
            self._detector = None

    def __enter__(self) -> "MediaPipeFaceDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verified_model_path(model: str, model_dir: Path) -> Path:
    """The .tflite file for `model`, refusing a missing or altered file."""
    return verified_detector_file(model, model_dir, MODEL_FILES)


def model_input_size(path: Path) -> int:
    """The side of the square image the detector network sees, read from its input tensor."""
    import_mediapipe()
    # mediapipe's own generated reader for the TFLite flatbuffer schema
    from mediapipe.tasks.metadata import schema_py_generated as tflite

    try:
        graph = tflite.Model.GetRootAsModel(path.read_bytes(), 0).Subgraphs(0)
        shape = graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()  # (1, height, width, 3)
        return int(max(shape[1:3]))
    except Exception as exc:  # a truncated or foreign file: flatbuffers fails in many ways
        raise ModelError(f"cannot read the input size of detector model {path}: {exc}") from None


class _NoTensorFlow:
    """Import hook that hides TensorFlow while mediapipe imports.

    mediapipe.tasks tries `from tensorflow.tools.docs import doc_controls` for its API
    docs only, which imports all of TensorFlow (6-9 s, a GB of memory) whenever the
    training extra is installed. It falls back cleanly on ModuleNotFoundError.
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def import_mediapipe() -> object:
    if "mediapipe.tasks.python.vision" in sys.modules or "tensorflow" in sys.modules:
        import mediapipe.tasks.python.vision

        return sys.modules["mediapipe"]
    blocker = _NoTensorFlow()
    sys.meta_path.insert(0, blocker)
    try:
        import mediapipe.tasks.python.vision  # noqa: F401
    finally:
        sys.meta_path.remove(blocker)
    return sys.modules["mediapipe"]


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Mutes what C++ code writes to file descriptor 2 (not Python's sys.stderr object).

    MediaPipe's LiteRT runtime logs a dozen INFO/WARNING lines at start-up, on the first
    frame and at shutdown, with no switch to turn them off; users should see our one-line
    messages instead. Used only around those calls, not per frame.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
