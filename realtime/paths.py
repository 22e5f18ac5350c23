"""Where the repository keeps its shipped files, resolved from the package location."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
DEFAULT_MODEL = MODELS_DIR / "faceres.onnx"
SHARED_DATA = ROOT.parent / "shared" / "data"
