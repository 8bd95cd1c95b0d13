"""The --target part of a pass report: does the model fit the device before and after the passes?

A thin bridge: the supported precisions pick the quantization mode (quantize.mode_for_precisions); estimates
and verdicts are the check module's, each model judged at the precision it is stored in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgefit.analysis.footprint import Footprint
from edgefit.devices.check import TargetResult


@dataclass(frozen=True)
class TargetVerdict:
    before: TargetResult                # the check module's full result for each model
    after: TargetResult

    @property
    def device(self) -> str:
        return self.after.profile.name

    @property
    def fits(self) -> bool:
        """The optimised model fits."""
        return self.after.fits

    def to_dict(self) -> dict[str, Any]:
        """`summary` (one line: what fits, or what is over budget and by how much) is added by the reporter."""
        return {"device": self.device, "precision_before": self.before.estimate.precision,
                "precision_after": self.after.estimate.precision, "fits_before": self.before.fits,
                "fits": self.fits, "latency_before_s": self.before.latency_s, "latency_after_s": self.after.latency_s,
                "latency_basis_before": self.before.estimate.basis, "latency_basis_after": self.after.estimate.basis,
                "latency_runtime": self.after.estimate.runtime,
                "before": self.before.to_dict(), "after": self.after.to_dict()}


def assess_target(profile, before: Footprint, after: Footprint) -> TargetVerdict:
    """Check both footprints against the device profile."""
    from edgefit.devices.check import check_footprint
    from edgefit.devices.estimate import model_precision

    return TargetVerdict(check_footprint(before, profile, precision=model_precision(before)),
                         check_footprint(after, profile, precision=model_precision(after)))
