"""Where the repository keeps its shipped files, resolved from the package location."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
# our fused model (faceres backbone + LightGBM heads fitted on ../shared faces); it beats
# the pretrained heads on every source (models/MODEL_CARD.md)
DEFAULT_MODEL = MODELS_DIR / "agegender.onnx"
# the pretrained network: the backbone that training extracts features with
BACKBONE_MODEL = MODELS_DIR / "faceres.onnx"
SHARED_DATA = ROOT.parent / "shared" / "data"
