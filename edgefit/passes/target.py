"""The --target part of a pass report: does the model fit the device before and after the passes?

A thin bridge: the supported precisions pick the quantization mode (quantize.mode_for_precisions); the verdict
itself is the check module's.
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
    latency_before_s: float | None      # estimates, not measurements
    latency_after_s: float | None
    summary: str                        # one line: what fits or what is over budget and by how much

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def deployed_precision(footprint: Footprint) -> str:
    """The precision a model runs at, judged from the dtype holding most of its weight bytes."""
    return {"int8": "int8", "uint8": "int8", "float16": "fp16", "bfloat16": "fp16"}.get(
        footprint.dominant_dtype, "fp32")


def assess_target(profile, before: Footprint, after: Footprint) -> TargetVerdict:
    """Check both footprints against the device profile at the precision each model runs at."""
    from edgefit.check import check_footprint

    precision_before, precision_after = deployed_precision(before), deployed_precision(after)
    report_before = check_footprint(before, profile, precision=precision_before)
    report_after = check_footprint(after, profile, precision=precision_after)
    return TargetVerdict(profile.name, precision_before, precision_after, report_before.fits, report_after.fits,
                         report_before.latency_s, report_after.latency_s, report_after.summary)
