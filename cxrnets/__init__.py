"""cxrnets: chest X-ray datasets, models, training and metrics in plain PyTorch (no Ray)."""

from cxrnets.errors import CxrError, DivergedError

__all__ = ["CxrError", "DivergedError"]
