"""Device profiles: one TOML file per device, validated into frozen DeviceProfile objects.

Profiles are looked up along a search path: directories given with `--profiles-dir`, then those in the
EDGEFIT_PROFILES environment variable (os.pathsep-separated), then the built-in profiles: the repository's
top-level `profiles/` folder, which a wheel carries as `edgefit/profiles/` (pyproject.toml maps the folder into
the package), and a source checkout or editable install reads where it is.
A profile in an earlier directory shadows a later one of the same name, so users can override built-ins.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgefit.devices.fields import (
    PRECISIONS,
    TIERS,
    aliases_field,
    bandwidth_field,
    basis_field,
    boolean_field,
    custom_ops_field,
    efficiency_field,
    fraction_field,
    memory_model_field,
    normalize_name,
    number_field,
    op_types_field,
    operator_list_field,
    peak_gmacs_field,
    positive_field,
    precisions_field,
    size_field,
    text_field,
    tier_field,
)
from edgefit.devices.operators import load_operator_list
from edgefit.devices.stacks import STACK_SETTINGS, RuntimeStack, StackSettings, runtime_stacks
from edgefit.errors import EdgefitError, ProfileError
from edgefit.toml_files import load_toml
from edgefit.units import parse_duration_s, parse_power_w

# Typical latency band per tier (DESIGN.md section 4: cloud 100-1000 ms incl. a 100-500 ms network round trip,
# edge 10-100 ms, mobile 5-50 ms, tiny 1-10 ms). Context for a latency figure, never a limit: what an application
# needs is the user's to say (a budget, a rate) or the profile's (`latency_budget`).
TIER_LATENCY_BAND_S = {"cloud": (0.100, 1.0), "edge": (0.010, 0.100), "mobile": (0.005, 0.050),
                       "tiny": (0.001, 0.010)}

def _builtin_profiles_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    installed = package / "profiles"          # inside an installed wheel
    return installed if installed.is_dir() else package.parent / "profiles"   # the source tree


BUILTIN_PROFILES_DIR = _builtin_profiles_dir()
PROFILES_ENV = "EDGEFIT_PROFILES"


@dataclass(frozen=True)
class DeviceProfile:
    """What edgefit needs to know about one device; every number comes with a source note in `sources`."""

    name: str
    display_name: str
    tier: str
    processor: str
    runtime: str
    precisions: tuple[str, ...]          # precisions the runtime can execute on this device
    ram_bytes: int                       # RAM (or accelerator/system memory) the model can use
    flash_bytes: int                     # flash / storage holding the model and the runtime
    runtime_ram_bytes: int               # RAM the runtime (and the firmware/OS it needs) takes
    runtime_flash_bytes: int             # code size of the runtime
    weights_in_ram: bool                 # the model file is loaded into RAM (phones, edge boxes, servers)
    peak_macs_per_s: Mapping[str, float]  # peak MAC rate per precision
    efficiency: Mapping[str, float]      # fraction of the peak MAC rate real kernels sustain, per precision
    memory_bandwidth_bytes_per_s: float  # activations (and weights when in RAM)
    flash_bandwidth_bytes_per_s: float   # weights read in place from flash (MCUs); = memory bandwidth otherwise
    inference_overhead_s: float          # fixed cost per inference (invoke, copies, scheduling)
    per_op_overhead_s: float             # dispatch cost per operator (interpreter step, kernel launch)
    network_rtt_s: float                 # request round trip to reach the device (cloud)
    active_power_w: float                # draw while running inference
    idle_power_w: float                  # draw between inferences
    latency_budget_s: float | None = None  # the latency the device's application needs, when the profile says
    # Largest cache a core's kernels run out of: what does not fit streams from memory (edgefit.devices.latency);
    # None: unknown, nothing is charged as uncached.
    last_level_cache_bytes: int | None = None
    basis: str = "datasheet"             # what the speed and power figures rest on: one of BASES
    expected_error: float | None = None  # relative error of the latency estimate (0.25: +-25%), when known
    ram_usable_fraction: float = 1.0     # share of RAM one app may take (phones' OS limits)
    battery_mah: float | None = None
    battery_v: float | None = None
    aliases: tuple[str, ...] = ()
    int8_ops: tuple[str, ...] | None = None   # ONNX op types the int8 kernels cover; None: every quantizable op
    operators: str | None = None   # the runtime's operator list (edgefit/devices/operators/NAME.toml); None: not judged
    custom_ops: tuple[str, ...] = ()   # ops the user wrote kernels for (DOMAIN.NAME): judged supported on any list
    shares_activation_storage: bool = False   # runtime aliases views and runs elementwise ops in place
    memory_model: str = "static"         # how the runtime spends RAM beside the activations (edgefit.devices.runtime_memory)
    notes: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)
    path: Path | None = None
    runtimes: tuple[RuntimeStack, ...] = ()   # software stacks with measured costs; the default one first
    calibration: Mapping[str, Any] | None = None   # `edgefit calibrate`'s record (models, fitted, loo_error, date)

    @property
    def default_runtime(self) -> str | None:
        return self.runtimes[0].name if self.runtimes else None

    @property
    def operator_lists(self) -> tuple[str, ...]:
        """The operator lists the profile and its runtime stacks name, each once."""
        names = [self.operators, *(stack.operators for stack in self.runtimes)]
        return tuple(dict.fromkeys(name for name in names if name is not None))

    def with_custom_ops(self, ops: Iterable[str]) -> DeviceProfile:
        """The profile with more ops declared as kernels the user wrote (--custom-op, a gate entry's custom_ops)."""
        added = tuple(op for op in dict.fromkeys(ops) if op not in self.custom_ops)
        return dataclasses.replace(self, custom_ops=self.custom_ops + added) if added else self

    def runtime_stack(self, name: str | None = None) -> RuntimeStack | None:
        """The stack called `name`, or the default one (None when the profile has no stacks)."""
        if name is None:
            return self.runtimes[0] if self.runtimes else None
        key = normalize_name(name)
        for stack in self.runtimes:
            if stack.name == key:
                return stack
        choices = ", ".join(stack.name for stack in self.runtimes)
        offered = f"it offers {choices}" if choices else "it has no runtime stacks"
        raise ProfileError(f"profile {self.name!r} has no runtime {name!r}: {offered}")

    def stack_settings(self, name: str | None = None) -> StackSettings:
        """Memory model, operator list and runtime footprint under the stack called `name` (default: the default
        stack): the stack's where it sets them, else the profile's."""
        stack = self.runtime_stack(name)
        values = {key: getattr(self, key) for key in STACK_SETTINGS}
        own = tuple(key for key in STACK_SETTINGS if stack is not None and getattr(stack, key) is not None)
        values.update({key: getattr(stack, key) for key in own})
        return StackSettings(stack.name if stack is not None else None, **values, from_stack=own)

    @property
    def ram_limit_bytes(self) -> int:
        """RAM the model and its runtime may use."""
        return int(self.ram_bytes * self.ram_usable_fraction)

    @property
    def battery_wh(self) -> float | None:
        if self.battery_mah is None or self.battery_v is None:
            return None
        return self.battery_mah / 1000 * self.battery_v

    def _rate_precision(self, precision: str) -> str:
        """An unsupported precision runs at the rate of the widest precision the profile has a rate for."""
        if precision in self.peak_macs_per_s:
            return precision
        return next(p for p in PRECISIONS if p in self.peak_macs_per_s)

    def macs_per_s(self, precision: str) -> float:
        """Sustained MAC rate at `precision`: peak x efficiency."""
        rate_precision = self._rate_precision(precision)
        return self.peak_macs_per_s[rate_precision] * self.efficiency[rate_precision]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "display_name": self.display_name, "tier": self.tier, "aliases": list(self.aliases),
            "int8_ops": list(self.int8_ops) if self.int8_ops is not None else None,
            "operators": self.operators, "custom_ops": list(self.custom_ops),
            "operator_lists": {name: load_operator_list(name).provenance() for name in self.operator_lists},
            "shares_activation_storage": self.shares_activation_storage, "memory_model": self.memory_model,
            "processor": self.processor, "runtime": self.runtime, "precisions": list(self.precisions),
            "ram_bytes": self.ram_bytes, "ram_usable_fraction": self.ram_usable_fraction,
            "ram_limit_bytes": self.ram_limit_bytes, "flash_bytes": self.flash_bytes,
            "runtime_ram_bytes": self.runtime_ram_bytes, "runtime_flash_bytes": self.runtime_flash_bytes,
            "weights_in_ram": self.weights_in_ram, "peak_macs_per_s": dict(self.peak_macs_per_s),
            "efficiency": dict(self.efficiency), "memory_bandwidth_bytes_per_s": self.memory_bandwidth_bytes_per_s,
            "flash_bandwidth_bytes_per_s": self.flash_bandwidth_bytes_per_s,
            "last_level_cache_bytes": self.last_level_cache_bytes,
            "inference_overhead_ms": self.inference_overhead_s * 1e3, "per_op_overhead_us": self.per_op_overhead_s * 1e6,
            "network_rtt_ms": self.network_rtt_s * 1e3, "active_power_w": self.active_power_w,
            "idle_power_w": self.idle_power_w, "battery_mah": self.battery_mah, "battery_v": self.battery_v,
            "latency_budget_ms": None if self.latency_budget_s is None else self.latency_budget_s * 1e3,
            "basis": self.basis, "expected_error": self.expected_error,
            "notes": self.notes, "sources": dict(self.sources),
            "path": str(self.path) if self.path else None,
            "default_runtime": self.default_runtime, "runtimes": [stack.to_dict() for stack in self.runtimes],
            "calibration": dict(self.calibration) if self.calibration is not None else None,
        }


# key in the TOML file -> (attribute, parser, required). Numbers with units accept the units of edgefit.units.
_FIELDS: dict[str, tuple[str, Callable[[Any], Any], bool]] = {
    "name": ("name", lambda v: normalize_name(text_field(v)), True),
    "display_name": ("display_name", text_field, True),
    "tier": ("tier", tier_field, True),
    "processor": ("processor", text_field, True),
    "runtime": ("runtime", text_field, True),
    "precisions": ("precisions", precisions_field, True),
    "ram": ("ram_bytes", size_field, True),
    "flash": ("flash_bytes", size_field, True),
    "runtime_ram": ("runtime_ram_bytes", lambda v: size_field(v, allow_zero=True), True),
    "runtime_flash": ("runtime_flash_bytes", lambda v: size_field(v, allow_zero=True), True),
    "weights_in_ram": ("weights_in_ram", boolean_field, True),
    "peak_gmacs": ("peak_macs_per_s", peak_gmacs_field, True),
    "efficiency": ("efficiency", efficiency_field, True),
    "memory_bandwidth": ("memory_bandwidth_bytes_per_s", positive_field(bandwidth_field), True),
    "flash_bandwidth": ("flash_bandwidth_bytes_per_s", positive_field(bandwidth_field), False),
    "inference_overhead": ("inference_overhead_s", positive_field(parse_duration_s, allow_zero=True), True),
    "per_op_overhead": ("per_op_overhead_s", positive_field(parse_duration_s, allow_zero=True), False),
    "network_rtt": ("network_rtt_s", positive_field(parse_duration_s, allow_zero=True), False),
    "active_power": ("active_power_w", positive_field(parse_power_w), True),
    "idle_power": ("idle_power_w", positive_field(parse_power_w, allow_zero=True), True),
    "latency_budget": ("latency_budget_s", positive_field(parse_duration_s), False),
    "last_level_cache": ("last_level_cache_bytes", size_field, False),
    "basis": ("basis", basis_field, False),
    "expected_error": ("expected_error", positive_field(number_field), False),
    "ram_usable_fraction": ("ram_usable_fraction", fraction_field, False),
    "battery_mah": ("battery_mah", positive_field(number_field), False),
    "battery_v": ("battery_v", positive_field(number_field), False),
    "aliases": ("aliases", aliases_field, False),
    "int8_ops": ("int8_ops", op_types_field, False),
    "operators": ("operators", operator_list_field, False),
    "custom_ops": ("custom_ops", custom_ops_field, False),
    "shares_activation_storage": ("shares_activation_storage", boolean_field, False),
    "memory_model": ("memory_model", memory_model_field, False),
    "notes": ("notes", text_field, False),
}
# Keys that are not numbers about the device and so need no source note.
_DESCRIPTIVE = frozenset({"name", "display_name", "tier", "aliases", "notes", "runtime", "precisions", "int8_ops",
                          "operators", "custom_ops", "memory_model", "basis"})
# Keys parsed apart from _FIELDS: tables (runtime stacks carry their own sources) and the default stack's name.
_TABLES = frozenset({"source", "runtimes", "default_runtime", "calibration"})


def parse_profile(data: Mapping[str, Any], origin: str, path: Path | None = None) -> DeviceProfile:
    """Validate one profile's TOML table; errors name `origin` (the file) and the offending field."""
    unknown = sorted(set(data) - set(_FIELDS) - _TABLES)
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(_FIELDS) + sorted(_TABLES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ProfileError(f"{origin}: unknown field {unknown[0]!r}{hint}")
    values: dict[str, Any] = {}
    for key, (attribute, parse, required) in _FIELDS.items():
        if key not in data:
            if required:
                raise ProfileError(f"{origin}: missing field {key!r}")
            continue
        try:
            values[attribute] = parse(data[key])
        except (ValueError, TypeError, EdgefitError) as error:  # edgefit.units raises ConfigError
            raise ProfileError(f"{origin}: field {key!r}: {error}") from None

    sources = data.get("source", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) and v.strip() for v in sources.values()):
        raise ProfileError(f"{origin}: field 'source': expected a table of non-empty notes, one per number")
    for key in data:
        if key not in _DESCRIPTIVE and key not in _TABLES and key not in sources:
            raise ProfileError(f"{origin}: field {key!r} has no source note (add source.{key} = \"datasheet ...\")")
    stray = sorted(set(sources) - set(data))
    if stray:
        raise ProfileError(f"{origin}: field 'source.{stray[0]}': no such field in the profile")

    missing_rates = [p for p in values["precisions"] if p not in values["peak_macs_per_s"]]
    if missing_rates:
        raise ProfileError(f"{origin}: field 'peak_gmacs': no rate for supported precision {missing_rates[0]!r}")
    missing_efficiency = [p for p in values["peak_macs_per_s"] if p not in values["efficiency"]]
    if missing_efficiency:
        raise ProfileError(f"{origin}: field 'efficiency': no value for precision {missing_efficiency[0]!r}")
    if ("battery_mah" in values) != ("battery_v" in values):
        raise ProfileError(f"{origin}: field 'battery_mah'/'battery_v': give both or neither")
    if values["idle_power_w"] > values["active_power_w"]:
        raise ProfileError(f"{origin}: field 'idle_power': idle power exceeds active power")
    values.setdefault("flash_bandwidth_bytes_per_s", values["memory_bandwidth_bytes_per_s"])
    values.setdefault("per_op_overhead_s", 0.0)
    values.setdefault("network_rtt_s", 0.0)
    calibration = data.get("calibration")
    if calibration is not None and not isinstance(calibration, dict):
        raise ProfileError(f"{origin}: field 'calibration': expected a table (written by edgefit calibrate)")
    return DeviceProfile(**values, sources=dict(sources), path=path,
                         runtimes=runtime_stacks(data, values["precisions"], origin), calibration=calibration)


def load_profile_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    return parse_profile(load_toml(path, ProfileError, "profile"), str(path), path)


# ---- the search path and lookup ------------------------------------------------------------------------

def profile_search_path(profiles_dir: str | Path | Iterable[str | Path] | None = None) -> tuple[Path, ...]:
    """Directories searched for profiles, highest priority first."""
    if profiles_dir is None:
        explicit: list[Path] = []
    elif isinstance(profiles_dir, (str, Path)):
        explicit = [Path(profiles_dir)]
    else:
        explicit = [Path(d) for d in profiles_dir]
    from_env = [Path(p) for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p.strip()]
    for directory in explicit + from_env:
        if not directory.is_dir():
            source = "--profiles-dir" if directory in explicit else PROFILES_ENV
            raise ProfileError(f"{source}: {directory} is not a directory")
    return tuple(explicit + from_env + [BUILTIN_PROFILES_DIR])


def list_profiles(profiles_dir: str | Path | Iterable[str | Path] | None = None) -> tuple[DeviceProfile, ...]:
    """Every profile on the search path (earlier directories shadow later ones), ordered by tier then name.
    A malformed profile file is an error: the caller asked for all of them."""
    profiles, broken = scan_profiles(profiles_dir)
    if broken:
        raise broken[0]
    return profiles


def scan_profiles(profiles_dir: str | Path | Iterable[str | Path] | None = None
                  ) -> tuple[tuple[DeviceProfile, ...], tuple[ProfileError, ...]]:
    """The profiles that load, and the errors of the files that do not: one broken file in a user's folder must
    not stop a command that names another device."""
    by_name: dict[str, DeviceProfile] = {}
    broken: list[ProfileError] = []
    for directory in profile_search_path(profiles_dir):
        for path in sorted(directory.glob("*.toml")):
            try:
                profile = load_profile_file(path)
            except ProfileError as error:
                broken.append(error)
                continue
            if profile.name in by_name:
                if by_name[profile.name].path is not None and by_name[profile.name].path.parent == directory:
                    raise ProfileError(f"{path}: profile name {profile.name!r} is already used by "
                                       f"{by_name[profile.name].path}")
                continue  # shadowed by a directory earlier on the search path
            by_name[profile.name] = profile
    _alias_index(by_name.values())  # fail early on clashing aliases
    return tuple(sorted(by_name.values(), key=lambda p: (TIERS.index(p.tier), p.name))), tuple(broken)


def _alias_index(profiles: Iterable[DeviceProfile]) -> dict[str, DeviceProfile]:
    index = {p.name: p for p in profiles}
    for profile in list(index.values()):
        for alias in profile.aliases:
            other = index.get(alias)
            if other is not None and other is not profile:
                raise ProfileError(f"{profile.path or profile.name}: field 'aliases': {alias!r} is already "
                                   f"the name or an alias of {other.path or other.name}")
            index[alias] = profile
    return index


def find_profile(name: str, profiles: Iterable[DeviceProfile], broken: Sequence[ProfileError] = ()) -> DeviceProfile:
    """The profile called `name` (or aliased so), or the profile file `name` when it ends in .toml; a near miss
    gets 'did you mean ...'. `broken`: errors of profile files that did not load, named when the name is not found."""
    if name.strip().lower().endswith(".toml"):
        return load_profile_file(name.strip())
    index = _alias_index(profiles)
    key = normalize_name(name)
    if key in index:
        return index[key]
    # Near misses by spelling, then names that start with what was typed ('jetson', 'arduino'); an alias
    # stands for its profile, so each device is suggested once, by its name.
    matches = difflib.get_close_matches(key, list(index), n=6, cutoff=0.6)
    matches += [n for n in index if n.startswith(key)]
    close = list(dict.fromkeys(index[m].name for m in matches))[:3]
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    if broken:   # the broken file may be the profile asked for
        raise ProfileError(f"unknown device profile {name!r}{hint}; a profile file on the search path did not "
                           f"load: {broken[0]}")
    raise ProfileError(f"unknown device profile {name!r}{hint} ('edgefit profiles list' shows them all)")


def load_profile(name: str, profiles_dir: str | Path | Iterable[str | Path] | None = None) -> DeviceProfile:
    """Look a device profile up by name or alias on the search path; a broken file elsewhere on the path does
    not matter unless the name is not found (then it may be the profile asked for, and its error is the answer)."""
    return find_profile(name, *scan_profiles(profiles_dir))
