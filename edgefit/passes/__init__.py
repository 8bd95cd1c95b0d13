"""Optimisation passes: each takes a model and returns PassResult(model, stats), never touching its input.

One pass = one module here exporting `PASS` (a edgefit.passes.base.Pass subclass); edgefit.passes.registry
finds it by name. The functions below are the passes' Python API.
"""

from edgefit.passes.base import Pass, PassOptions, PassResult
from edgefit.passes.fuse import FuseStats, fuse
from edgefit.passes.pipeline import PassSpec, PipelineResult, parse_passes, run_passes
from edgefit.passes.prune import PruneStats, prune
from edgefit.passes.quantize import QuantizeStats, mode_for_precisions, quantize
from edgefit.passes.reorder import ReorderStats, reorder

__all__ = [
    "Pass", "PassResult", "FuseStats", "PruneStats", "QuantizeStats", "ReorderStats", "PassOptions", "PassSpec",
    "PipelineResult", "fuse", "prune", "quantize", "reorder", "run_passes", "parse_passes", "mode_for_precisions",
]
