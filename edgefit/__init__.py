"""edgefit: will this ONNX model fit the device? Footprint analysis, device budgets and optimisation passes.

The library mirrors the CLI: each command is a thin layer over one of these functions, which return plain
frozen dataclasses that the reporters in edgefit.report format.
"""

from edgefit.analysis.footprint import Footprint, LayerStats, analyze
from edgefit.check import Budgets, CheckReport, GateReport, TierSummary, check_footprint, run_gate, tier_summary
from edgefit.devices import DeviceProfile, list_profiles, load_profile
from edgefit.errors import ConfigError, EdgefitError, ModelError, PassError, ProfileError, ShapeError
from edgefit.fidelity import Fidelity, compare
# Imported here, not lazily: `edgefit.fit` must be the function, and importing the submodule of the same name
# later would bind the module over it. Its own imports are the ones above.
from edgefit.fit import FitReport, fit
from edgefit.model import load_model, save_model
from edgefit.passes import PassOptions, PassResult, PipelineResult, fuse, prune, quantize, run_passes
from edgefit.passes.pipeline import OptimizeReport, optimize_file

__all__ = [
    "analyze", "Footprint", "LayerStats", "load_model", "save_model",
    # `check` and `estimate` stay in their modules: as package attributes they would shadow the submodules.
    "check_footprint", "tier_summary", "run_gate", "Budgets", "CheckReport", "GateReport", "TierSummary",
    "load_profile", "list_profiles", "DeviceProfile",
    "fuse", "prune", "quantize", "run_passes", "optimize_file", "PassOptions", "PassResult", "PipelineResult",
    "OptimizeReport", "compare", "Fidelity", "fit", "FitReport",
    "EdgefitError", "ModelError", "ShapeError", "ProfileError", "PassError", "ConfigError",
]
