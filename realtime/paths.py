"""Where the repository keeps its shipped files, resolved from the package location."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
# our fused model (faceres backbone + LightGBM heads fitted on ../shared faces); it beats
# the pretrained heads on every source (models/MODEL_CARD.md)
DEFAULT_MODEL = MODELS_DIR / "agegender.onnx"
# the pretrained network: the backbone that training extracts features with
BACKBONE_MODEL = MODELS_DIR / "faceres.onnx"
SHARED_DATA = ROOT.parent / "shared" / "data"


def git_commit() -> str:
    """The checkout's short commit, recorded with what training and export write; "" outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, cwd=ROOT)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
