"""Optimisation passes: each takes a model and returns PassResult(model, stats), never touching its input."""

from edgefit.passes.base import PassResult
from edgefit.passes.fuse import FuseStats, fuse
from edgefit.passes.pipeline import PassOptions, PassSpec, PipelineResult, parse_passes, run_passes
from edgefit.passes.prune import PruneStats, prune
from edgefit.passes.quantize import QuantizeStats, mode_for_precisions, quantize
from edgefit.passes.reorder import ReorderStats, reorder

__all__ = [
    "PassResult", "FuseStats", "PruneStats", "QuantizeStats", "ReorderStats", "PassOptions", "PassSpec", "PipelineResult",
    "fuse", "prune", "quantize", "reorder", "run_passes", "parse_passes", "mode_for_precisions",
]
