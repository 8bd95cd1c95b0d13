"""Footprint x DeviceProfile x Budgets -> verdicts with margins and the per-tier summary (the CI gate: edgefit.gate).

A target fits when every verdict is ok: RAM and flash always (the device's limits, which a budget can only
tighten), the precision when the device's runtime cannot execute it, and latency and power only against a
budget someone set. Latency is judged against `--max-latency` (or a gate's `max_latency`), else the budget the
profile declares for its application, capped at 1/rate when a rate is given (the device must keep up); power
against `--max-power`. Without a latency budget the latency verdict is context: it carries the tier's typical
band and never fails.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefit.analysis.footprint import Footprint, analysed_graph
from edgefit.analysis.patching import PatchAdvice, PatchPlan, advise_patching, patch_plans
from edgefit.devices.estimate import METHOD, Estimate, estimate, model_precision, with_host_fallback
from edgefit.devices.fields import TIERS, check_precision
from edgefit.devices.operators.coverage import Coverage, ModelGraph, NodeCoverage, operator_coverage
from edgefit.devices.profiles import (
    TIER_LATENCY_BAND_S,
    DeviceProfile,
    find_profile,
    load_profile,
    profile_search_path,
    scan_profiles,
)
from edgefit.errors import ConfigError, ProfileError
from edgefit.model import collector_paused
from edgefit.units import check_rate_hz, parse_duration_s, parse_power_w, parse_size

ProfilesDir = str | Path | Iterable[str | Path] | None


@dataclass(frozen=True)
class Budgets:
    """User limits: RAM and flash tighten the device's own; latency and power are budgets. None: no user limit."""

    max_ram_bytes: int | None = None
    max_flash_bytes: int | None = None
    max_latency_s: float | None = None
    max_power_w: float | None = None

    @classmethod
    def parse(cls, max_ram: str | int | None = None, max_flash: str | int | None = None,
              max_latency: str | float | None = None, max_power: str | float | None = None) -> "Budgets":
        """From option or TOML values with units: '200KiB', '1MB', '20ms', '50mW'."""
        def positive(value, parse, name):
            if value is None:
                return None
            number = parse(value)
            if number <= 0:
                raise ConfigError(f"invalid {name} {value!r}: expected a positive value")
            return number
        return cls(positive(max_ram, parse_size, "max-ram"), positive(max_flash, parse_size, "max-flash"),
                   positive(max_latency, parse_duration_s, "max-latency"),
                   positive(max_power, parse_power_w, "max-power"))


@dataclass(frozen=True)
class Band:
    """A tier's typical range for a figure, in the unit of the verdict that carries it: context, never a limit."""

    tier: str
    low: float
    high: float

    def position(self, value: float, lower_bound: bool = False) -> str | None:
        """'below', 'within' or 'above' the band; None when a lower bound under the top cannot tell."""
        if value > self.high:
            return "above"
        if lower_bound:
            return None
        return "below" if value < self.low else "within"

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Verdict:
    """One figure on one target against its limit. Sizes are in bytes, latency in ms, power in mW.

    A verdict without a limit is context: nobody set a budget for the figure, so it is reported (with its tier's
    typical band) but cannot fail.
    """

    metric: str                  # ram | flash | latency | power | precision | ram_growth | flash_growth
    value: float | str
    limit: float | str | None    # None: no budget, the verdict is context
    unit: str                    # bytes | ms | mW | '' (precision)
    ok: bool
    limit_source: str | None     # where the limit comes from: device, budget, profile, rate, baseline ...
    lower_bound: bool = False    # the value is a lower bound (some layer's cost is unknown)
    band: Band | None = None     # the tier's typical band for the figure (latency)
    judged: bool = True          # False: passes only because it could not be judged (ops a partial list lacks)

    @property
    def status(self) -> str:
        """'context', 'ok', 'over', or 'not judged' (it passes, but nothing was checked: never shown as ok)."""
        if self.kind == "context":
            return "context"
        if not self.ok:
            return "over"
        return "ok" if self.judged else "not judged"

    @property
    def kind(self) -> str:
        """'budget' when the figure is judged against a limit, 'context' when it is only reported."""
        return "context" if self.limit is None else "budget"

    @property
    def band_position(self) -> str | None:
        if self.band is None or isinstance(self.value, str):
            return None
        return self.band.position(self.value, self.lower_bound)

    @property
    def margin_pct(self) -> float | None:
        """Headroom as a share of the limit: positive is under budget, negative is over by that much."""
        if isinstance(self.value, str) or isinstance(self.limit, str) or not self.limit:
            return None
        return (self.limit - self.value) / self.limit * 100

    @property
    def overshoot(self) -> float:
        """value / limit: how far over budget (used to find a tier's binding constraint)."""
        if isinstance(self.value, str) or isinstance(self.limit, str) or not self.limit:
            return math.inf
        return self.value / self.limit

    def to_dict(self) -> dict[str, Any]:
        margin = self.margin_pct
        band = None if self.band is None else {**self.band.to_dict(), "position": self.band_position}
        return {"metric": self.metric, "kind": self.kind, "value": self.value, "limit": self.limit,
                "unit": self.unit, "ok": self.ok, "status": self.status, "margin_pct": None if margin is None else round(margin, 2),
                "limit_source": self.limit_source, "lower_bound": self.lower_bound, "band": band}


@dataclass(frozen=True)
class TargetResult:
    profile: DeviceProfile
    estimate: Estimate
    verdicts: tuple[Verdict, ...]
    patch_plan: PatchAdvice | None = None   # patch-based execution advice, when RAM binds
    operators: Coverage | None = None       # the model's ops on the profile's operator list, when it names one

    @property
    def fits(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def failures(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.ok)

    @property
    def latency_s(self) -> float:
        return self.estimate.latency_s

    def verdict(self, metric: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.metric == metric), None)

    @property
    def runtime_label(self) -> str:
        """What the estimates are for: the runtime stack's display name, else the profile's runtime."""
        if self.estimate.runtime is None:
            return self.profile.runtime
        return self.profile.runtime_stack(self.estimate.runtime).display_name

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.profile.name, "name": self.profile.display_name, "tier": self.profile.tier,
                "runtime": self.runtime_label, "fits": self.fits,
                "checks": [v.to_dict() for v in self.verdicts],
                "estimates": {**self.estimate.to_dict(),
                              **({"patch_plan": self.patch_plan.to_dict()} if self.patch_plan else {})},
                "operators": self.operators.to_dict() if self.operators else None}


@dataclass(frozen=True)
class Int8Outlook:
    """What deploying in int8 would change for a tier that does not fit."""

    fits: bool
    devices: tuple[str, ...]      # tier devices that fit in int8
    binding: Verdict | None       # the same constraint on the same best device, at int8

    def to_dict(self) -> dict[str, Any]:
        return {"fits": self.fits, "devices": list(self.devices),
                "binding": self.binding.to_dict() if self.binding else None}


@dataclass(frozen=True)
class TierResult:
    tier: str
    fits: bool
    devices: tuple[str, ...]             # devices of the tier that fit
    checked: tuple[str, ...]             # devices of the tier that were checked
    best_device: str | None = None       # for a tier that does not fit: the device closest to fitting
    binding: Verdict | None = None       # ... and the constraint it misses by most
    int8: Int8Outlook | None = None      # None when already int8
    # When operators bind: the best device's coverage (its first op that cannot run), and whether no checked
    # device of the tier runs the model's operators.
    operators: Coverage | None = None
    operators_fail_everywhere: bool = False

    @property
    def first_unsupported(self) -> NodeCoverage | None:
        return self.operators.not_running[0] if self.operators and self.operators.not_running else None

    def to_dict(self) -> dict[str, Any]:
        first = self.first_unsupported
        return {"fits": self.fits, "devices": list(self.devices), "checked": list(self.checked),
                "best_device": self.best_device, "binding": self.binding.to_dict() if self.binding else None,
                "int8": self.int8.to_dict() if self.int8 else None,
                "first_unsupported": None if first is None else {**first.to_dict(), "runtime": self.operators.title},
                "operators_fail_everywhere": self.operators_fail_everywhere}


@dataclass(frozen=True)
class TierSummary:
    """Which tiers a model fits: the data behind the one-line answer `render_tier_line` prints."""

    precision: str
    tiers: tuple[TierResult, ...]        # in TIERS order, only tiers with checked devices

    @property
    def fitting(self) -> tuple[str, ...]:
        return tuple(t.tier for t in self.tiers if t.fits)

    def to_dict(self) -> dict[str, Any]:
        return {t.tier: t.to_dict() for t in self.tiers}


@dataclass(frozen=True)
class CheckReport:
    model_path: str | None
    precision: str                       # the deployed precision
    precision_is_models_own: bool        # True when no precision was requested
    rate_hz: float | None
    budgets: Budgets
    targets: tuple[TargetResult, ...]
    tiers: TierSummary
    unknowns: tuple[str, ...]            # the footprint's reasons some figure is incomplete
    method: str = METHOD

    @property
    def fits(self) -> bool:
        return all(t.fits for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model_path, "precision": self.precision, "rate_hz": self.rate_hz,
                "fits": self.fits, "estimated": True, "method": self.method, "unknowns": list(self.unknowns),
                "targets": [t.to_dict() for t in self.targets], "tiers": self.tiers.to_dict()}


# ---- one target ----------------------------------------------------------------------------------------

def _tightest(device_limit: float, budget: float | None) -> tuple[float, str]:
    if budget is not None and budget < device_limit:
        return budget, "budget"
    return device_limit, "device"


def _latency_limit(profile: DeviceProfile, budgets: Budgets, rate_hz: float | None) -> tuple[float | None, str | None]:
    """The latency someone asked for, in seconds, and who: the user's budget, else the one the profile declares
    for its application; 1/rate caps either, since a device that cannot keep up fails whatever the budget.
    (None, None) when nobody set one."""
    if budgets.max_latency_s is not None:
        limit, source = budgets.max_latency_s, "budget"
    elif profile.latency_budget_s is not None:
        limit, source = profile.latency_budget_s, "profile"
    else:
        limit, source = None, None
    if rate_hz is not None and (limit is None or 1 / rate_hz < limit):
        limit, source = 1 / rate_hz, "rate"
    return limit, source


def check_footprint(footprint: Footprint, profile: DeviceProfile | str, precision: str | None = None,
                    budgets: Budgets = Budgets(), rate_hz: float | None = None,
                    runtime: str | None = None) -> TargetResult:
    """Estimate `footprint` on one device (a profile, or a name looked up on the default search path) and
    compare every figure with its limit."""
    if isinstance(profile, str):
        profile = load_profile(profile)
    check_rate_hz(rate_hz)
    est = estimate(footprint, profile, precision, rate_hz, runtime)
    ram_limit, ram_source = _tightest(profile.ram_limit_bytes, budgets.max_ram_bytes)
    flash_limit, flash_source = _tightest(profile.flash_bytes, budgets.max_flash_bytes)
    latency_limit, latency_source = _latency_limit(profile, budgets, rate_hz)
    low, high = TIER_LATENCY_BAND_S[profile.tier]
    lower_bound = est.latency_is_lower_bound
    verdicts = [
        Verdict("ram", est.ram_bytes, ram_limit, "bytes", est.ram_bytes <= ram_limit, ram_source),
        Verdict("flash", est.flash_bytes, flash_limit, "bytes", est.flash_bytes <= flash_limit, flash_source),
        Verdict("latency", est.latency_s * 1e3, None if latency_limit is None else latency_limit * 1e3, "ms",
                latency_limit is None or est.latency_s <= latency_limit, latency_source, lower_bound,
                Band(profile.tier, low * 1e3, high * 1e3)),
    ]
    if budgets.max_power_w is not None:
        verdicts.append(Verdict("power", est.avg_power_w * 1e3, budgets.max_power_w * 1e3, "mW",
                                est.avg_power_w <= budgets.max_power_w, "budget", lower_bound))
    verdicts.append(Verdict("precision", est.precision, ", ".join(profile.precisions), "",
                            est.precision_supported, "device"))
    return TargetResult(profile, est, tuple(verdicts))


def with_model_advice(results: Sequence[TargetResult], footprint: Footprint, proto: Any = None, *,
                      patching: bool = True) -> tuple[TargetResult, ...]:
    """The results with what needs the model's graph, not only its footprint (which names the model file; an
    in-memory footprint gets neither unless its ModelProto is given as `proto`): the `operators` verdict on the
    profile's operator list, and where RAM binds (and `patching`), patch-based execution advice for the RAM the
    device leaves to activations."""
    if proto is None and (footprint.model_path is None or not Path(footprint.model_path).is_file()):
        return tuple(results)
    def model() -> Any:
        return _model(footprint, proto)

    def graph() -> ModelGraph:
        return _graph(footprint, proto)

    plans: dict[str, list[PatchPlan]] = {}
    advised = []
    for result in results:
        precision = result.estimate.precision
        operators = result.estimate.settings.operators
        if operators is not None:
            coverage = operator_coverage(graph(), footprint, operators, precision, result.profile,
                                         result.profile.custom_ops)
            result = dataclasses.replace(result, operators=coverage,
                                         verdicts=(*result.verdicts, _operators_verdict(coverage)))
            if coverage.fallback_layers and coverage.fallback_latency_s is not None:
                result = _with_fallback(result, footprint, coverage)
        ram = result.verdict("ram")
        if patching and ram is not None and not ram.ok:
            if precision not in plans:
                plans[precision] = patch_plans(model(), footprint, precision)
            left = int(ram.limit) - (result.estimate.ram_bytes - result.estimate.activation_bytes)
            result = dataclasses.replace(result, patch_plan=advise_patching(plans[precision], left))
        advised.append(result)
    return tuple(advised)


# The model and its graph by (footprint, given proto): read on first use and shared by every target and by the
# deployed and int8 passes of one check (a large graph takes a second to read and index). The graph of the
# footprint `analyze` just made is the analysis' own: the model is then read again only if patching asks for it.
_graphs: dict[tuple[int, int], ModelGraph] = {}
_models: dict[tuple[int, int], Any] = {}


def _cached(cache: dict[tuple[int, int], Any], footprint: Footprint, proto: Any, make: Any) -> Any:
    key = (id(footprint), id(proto))
    if key not in cache:
        cache[key] = make()
        weakref.finalize(footprint, cache.pop, key, None)   # the entry lives as long as the footprint
    return cache[key]


def _model(footprint: Footprint, proto: Any) -> Any:
    from edgefit.model import load_model

    return _cached(_models, footprint, proto,
                   lambda: proto if proto is not None else load_model(footprint.model_path).proto)


def _graph(footprint: Footprint, proto: Any) -> ModelGraph:
    analysed = analysed_graph(footprint) if proto is None else None
    return _cached(_graphs, footprint, proto, lambda: ModelGraph(None, footprint, analysed) if analysed
                   else ModelGraph(_model(footprint, proto), footprint))


def _with_fallback(result: TargetResult, footprint: Footprint, coverage: Coverage) -> TargetResult:
    """The result with the layers an accelerator hands back to the host CPU timed there: the latency and power
    verdicts judge the new figures against the limits they had."""
    est = with_host_fallback(result.estimate, footprint, result.profile, set(coverage.fallback_layers),
                             coverage.fallback_latency_s)
    figures = {"latency": est.latency_s * 1e3, "power": est.avg_power_w * 1e3}
    verdicts = tuple(
        dataclasses.replace(v, value=figures[v.metric], ok=v.limit is None or figures[v.metric] <= v.limit)
        if v.metric in figures else v for v in result.verdicts)
    return dataclasses.replace(result, estimate=est, verdicts=verdicts)


def _operators_verdict(coverage: Coverage) -> Verdict:
    """Fails only where the model cannot run (an MCU runtime missing a kernel); a fallback to the host CPU or an
    op edgefit cannot judge is reported in the value, not as a failure."""
    failing, unknown = len(coverage.not_running), len(coverage.unknown)
    if not coverage.runs:
        value = f"{failing} unsupported"
    elif coverage.fallback_layers:
        value = f"{len(coverage.fallback_layers)} on CPU"
    else:
        value = "all supported" if not unknown else f"{unknown} unknown (not judged)"
    if unknown and "unknown" not in value:
        value += f", {unknown} unknown (not judged)"
    return Verdict("operators", value, coverage.runtime, "", coverage.runs, "runtime",
                   judged=not unknown or not coverage.runs)


# ---- tiers ---------------------------------------------------------------------------------------------

def _fails_on_operators(result: TargetResult) -> bool:
    verdict = result.verdict("operators")
    return verdict is not None and not verdict.ok


def _closest_to_fitting(results: Sequence[TargetResult]) -> TargetResult:
    """The device that misses by least: precision misses rank last, then operator misses (nothing scales them
    away), then by the worst overshoot of the rest."""
    def severity(result: TargetResult) -> tuple[bool, bool, float]:
        numeric = [v.overshoot for v in result.failures if v.metric not in ("precision", "operators")]
        return (not result.estimate.precision_supported, _fails_on_operators(result), max(numeric, default=0.0))
    return min(results, key=severity)


def _binding(result: TargetResult) -> Verdict:
    """The failed verdict that matters most: an unsupported precision, else the largest overshoot."""
    failures = result.failures
    precision = next((v for v in failures if v.metric == "precision"), None)
    numeric = [v for v in failures if v.metric != "precision"]
    if precision is not None and not numeric:
        return precision
    return max(numeric, key=lambda v: v.overshoot)


def summarize_tiers(results: Sequence[TargetResult], precision: str,
                    int8_results: Sequence[TargetResult] = ()) -> TierSummary:
    """Per tier: fits if any checked device fits; otherwise the binding constraint and the int8 outlook."""
    int8_by_name = {r.profile.name: r for r in int8_results}
    tiers = []
    for tier in TIERS:
        members = [r for r in results if r.profile.tier == tier]
        if not members:
            continue
        fitting = tuple(r.profile.name for r in members if r.fits)
        checked = tuple(r.profile.name for r in members)
        if fitting:
            tiers.append(TierResult(tier, True, fitting, checked))
            continue
        best = _closest_to_fitting(members)
        binding = _binding(best)
        outlook = None
        if precision != "int8" and all(name in int8_by_name for name in checked):
            int8_members = [int8_by_name[name] for name in checked]
            outlook = Int8Outlook(
                fits=any(r.fits for r in int8_members),
                devices=tuple(r.profile.name for r in int8_members if r.fits),
                binding=int8_by_name[best.profile.name].verdict(binding.metric),
            )
        on_operators = binding.metric == "operators"
        tiers.append(TierResult(tier, False, (), checked, best.profile.name, binding, outlook,
                                best.operators if on_operators else None,
                                on_operators and all(_fails_on_operators(r) for r in members)))
    return TierSummary(precision, tuple(tiers))


# ---- the check -----------------------------------------------------------------------------------------

def analyze_for_check(model: str | Path, input_shapes: Mapping[str, Sequence[int]] | None,
                      dims: Mapping[str, int] | None, assume_dims: int | None = None,
                      input_values: Mapping[str, Sequence[float]] | None = None) -> Footprint:
    from edgefit.analysis.footprint import analyze

    return analyze(model, input_shapes=dict(input_shapes or {}), dims=dict(dims or {}), assume_dims=assume_dims,
                   input_values={name: list(v) for name, v in (input_values or {}).items()})


def resolve_targets(targets: Iterable[str | DeviceProfile] | None, profiles_dir: ProfilesDir = None,
                    custom_ops: Iterable[str] = ()) -> tuple[DeviceProfile, ...]:
    """Profiles for names/aliases (or profile objects), without repeats; None means every profile on the path.
    `custom_ops`: ops the user wrote kernels for (--custom-op), added to every profile's own."""
    return tuple(profile.with_custom_ops(custom_ops) for profile in _resolve_targets(targets, profiles_dir))


def _resolve_targets(targets: Iterable[str | DeviceProfile] | None,
                     profiles_dir: ProfilesDir) -> tuple[DeviceProfile, ...]:
    requested = None if targets is None else list(targets)
    needs_lookup = requested is None or any(not isinstance(t, DeviceProfile) for t in requested)
    available, broken = scan_profiles(profiles_dir) if needs_lookup else ((), ())
    if broken and requested is None:   # --all: every profile was asked for
        raise broken[0]
    if requested is None:
        if not available:   # every device checked would be none: never report that as fitting
            searched = ", ".join(str(d) for d in profile_search_path(profiles_dir))
            raise ProfileError(f"no device profiles found (searched {searched}); give a folder of profiles with "
                               "--profiles-dir or reinstall edgefit, whose built-in profiles are missing")
        return tuple(available)
    if not requested:
        raise ConfigError("no target given: name one with --target NAME or use --all")
    resolved: dict[str, DeviceProfile] = {}
    for target in requested:
        profile = target if isinstance(target, DeviceProfile) else find_profile(target, available, broken)
        resolved.setdefault(profile.name, profile)
    return tuple(resolved.values())


@collector_paused()   # a check of a large graph on every device makes as many objects as its analysis
def check(model: Footprint | str | Path, targets: Iterable[str | DeviceProfile] | None = None,
          precision: str | None = None, budgets: Budgets = Budgets(), rate_hz: float | None = None, *,
          profiles_dir: ProfilesDir = None, input_shapes: Mapping[str, Sequence[int]] | None = None,
          dims: Mapping[str, int] | None = None, runtime: str | None = None, patching: bool = True,
          assume_dims: int | None = None, custom_ops: Iterable[str] = (),
          input_values: Mapping[str, Sequence[float]] | None = None) -> CheckReport:
    """Check a model (a Footprint, or a path analyzed here) against targets (names or profiles; None: all),
    with the targets' runtime stack `runtime` (default: each profile's default stack). `patching`: advise
    patch-based execution where RAM binds (the tier summary alone does not show it). `custom_ops`: ops the user
    wrote kernels for (DOMAIN.NAME), judged supported on every target. `input_values`: values of inputs that
    decide control flow (--input-value)."""
    footprint = model if isinstance(model, Footprint) else analyze_for_check(model, input_shapes, dims, assume_dims,
                                                                             input_values)
    check_precision(precision)
    check_rate_hz(rate_hz)
    profiles = resolve_targets(targets, profiles_dir, custom_ops)
    deployed = precision or model_precision(footprint)
    plain = tuple(check_footprint(footprint, p, deployed, budgets, rate_hz, runtime) for p in profiles)
    results = with_model_advice(plain, footprint, patching=patching)
    # A tier's int8 outlook matters only when none of its devices fit, so judging those tiers' devices suffices.
    fitting_tiers = {r.profile.tier for r in results if r.fits}
    int8_results = () if deployed == "int8" else with_model_advice(tuple(
        check_footprint(footprint, r.profile, "int8", budgets, rate_hz, runtime) for r in results
        if r.profile.tier not in fitting_tiers), footprint, patching=patching)
    return CheckReport(
        model_path=footprint.model_path, precision=deployed, precision_is_models_own=precision is None,
        rate_hz=rate_hz, budgets=budgets, targets=results,
        tiers=summarize_tiers(results, deployed, int8_results),
        unknowns=footprint.unknowns,
    )


def tier_summary(model: Footprint | str | Path, precision: str | None = None, budgets: Budgets = Budgets(),
                 rate_hz: float | None = None, *, profiles_dir: ProfilesDir = None,
                 custom_ops: Iterable[str] = ()) -> TierSummary:
    """Which of cloud/edge/mobile/tiny the model fits, over every profile on the search path."""
    return check(model, None, precision, budgets, rate_hz, profiles_dir=profiles_dir, patching=False,
                 custom_ops=custom_ops).tiers
