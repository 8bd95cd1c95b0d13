"""edgefit: will this ONNX model fit the device? Footprint analysis, device budgets and optimisation passes."""

from edgefit.analysis.footprint import Footprint, LayerStats, analyze
from edgefit.errors import ConfigError, EdgefitError, ModelError, PassError, ProfileError, ShapeError
from edgefit.model import load_model, save_model

__all__ = [
    "analyze", "Footprint", "LayerStats", "load_model", "save_model",
    "EdgefitError", "ModelError", "ShapeError", "ProfileError", "PassError", "ConfigError",
]
