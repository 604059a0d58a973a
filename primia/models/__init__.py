"""Networks: a factory over MONAI networks plus a small CNN, all DP-ready."""

from primia.models.factory import build_model

__all__ = ["build_model"]
