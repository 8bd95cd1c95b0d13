"""edgefit: will this ONNX model fit the device? Footprint analysis, device budgets and optimisation passes.

The library mirrors the CLI: each command is a thin layer over one of these functions, which return plain
frozen dataclasses that the reporters in edgefit.report format.

Names are imported on first use (module `__getattr__`), so `import edgefit` -- and `edgefit --help` or
`edgefit profiles list` -- do not load onnx and numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module defining it. `check` and `estimate` stay in their modules: as package attributes
# they would shadow the submodules.
_EXPORTS = {
    "analyze": "edgefit.analysis.footprint", "Footprint": "edgefit.analysis.footprint",
    "LayerStats": "edgefit.analysis.footprint",
    "load_model": "edgefit.model", "save_model": "edgefit.model",
    "check_footprint": "edgefit.devices.check", "tier_summary": "edgefit.devices.check", "Budgets": "edgefit.devices.check",
    "CheckReport": "edgefit.devices.check", "TierSummary": "edgefit.devices.check",
    "run_gate": "edgefit.gate", "GateReport": "edgefit.gate",
    "load_profile": "edgefit.devices.profiles", "list_profiles": "edgefit.devices.profiles",
    "DeviceProfile": "edgefit.devices.profiles",
    "fuse": "edgefit.passes", "prune": "edgefit.passes", "quantize": "edgefit.passes",
    "run_passes": "edgefit.passes.pipeline", "optimize_file": "edgefit.passes.pipeline",
    "PassOptions": "edgefit.passes.pipeline", "PipelineResult": "edgefit.passes.pipeline",
    "OptimizeReport": "edgefit.passes.pipeline", "PassResult": "edgefit.passes.base",
    "compare": "edgefit.fidelity", "Fidelity": "edgefit.fidelity",
    # The function lives in edgefit.fitting: a submodule named `fit` would rebind `edgefit.fit` when imported.
    "fit": "edgefit.fitting", "FitReport": "edgefit.fitting",
    "EdgefitError": "edgefit.errors", "ModelError": "edgefit.errors", "ShapeError": "edgefit.errors",
    "ProfileError": "edgefit.errors", "PassError": "edgefit.errors", "ConfigError": "edgefit.errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgefit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value   # the next lookup skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from edgefit.analysis.footprint import Footprint, LayerStats, analyze
    from edgefit.devices.check import Budgets, CheckReport, TierSummary, check_footprint, tier_summary
    from edgefit.devices.profiles import DeviceProfile, list_profiles, load_profile
    from edgefit.errors import ConfigError, EdgefitError, ModelError, PassError, ProfileError, ShapeError
    from edgefit.fidelity import Fidelity, compare
    from edgefit.fitting import FitReport, fit
    from edgefit.gate import GateReport, run_gate
    from edgefit.model import load_model, save_model
    from edgefit.passes import fuse, prune, quantize
    from edgefit.passes.base import PassResult
    from edgefit.passes.pipeline import OptimizeReport, PassOptions, PipelineResult, optimize_file, run_passes
