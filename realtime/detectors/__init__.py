"""Face detector implementations, one module each; `realtime.detection.ENGINES` names them."""
