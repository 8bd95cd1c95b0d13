"""The --target part of a pass report: does the model fit the device before and after the passes?

A thin bridge: the supported precisions pick the quantization mode (quantize.mode_for_precisions); estimates
and verdicts are the check module's, each model judged at the precision it is stored in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgefit.analysis.footprint import Footprint


@dataclass(frozen=True)
class TargetVerdict:
    device: str
    precision_before: str
    precision_after: str
    fits_before: bool
    fits: bool                          # the optimised model fits
    latency_before_s: float             # estimates, not measurements
    latency_after_s: float
    summary: str                        # one line: what fits or what is over budget and by how much
    before: dict[str, Any]              # the check module's full result for each model
    after: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def assess_target(profile, before: Footprint, after: Footprint) -> TargetVerdict:
    """Check both footprints against the device profile."""
    from edgefit.check import check_footprint
    from edgefit.estimate import model_precision

    result_before = check_footprint(before, profile, precision=model_precision(before))
    result_after = check_footprint(after, profile, precision=model_precision(after))
    return TargetVerdict(profile.name, result_before.estimate.precision, result_after.estimate.precision,
                         result_before.fits, result_after.fits, result_before.latency_s, result_after.latency_s,
                         result_after.summary, result_before.to_dict(), result_after.to_dict())
