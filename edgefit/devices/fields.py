"""The values a device profile holds, parsed and checked one field at a time: the parsers profiles.py and
stacks.py share, and the vocabularies (tiers, precisions, bases) they check against."""

from __future__ import annotations

import math
from typing import Any, Callable

from edgefit.devices.runtime_memory import MEMORY_MODELS
from edgefit.errors import ConfigError
from edgefit.units import parse_size

TIERS = ("cloud", "edge", "mobile", "tiny")
PRECISIONS = ("fp32", "fp16", "int8")


def check_precision(precision: str | None) -> None:
    """A deployment precision someone asked for must be one edgefit models (None: the model's own)."""
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


# What the speed and power figures of a profile or runtime stack rest on.
BASES = ("datasheet", "published measurement", "user calibration")



def normalize_name(name: str) -> str:
    """Profile names are matched case-insensitively, with '_' and spaces meaning '-'."""
    return "-".join(name.strip().lower().replace("_", " ").split())



def text_field(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def positive_field(parse: Callable[[Any], float], allow_zero: bool = False) -> Callable[[Any], float]:
    def parse_positive(value: Any) -> float:
        number = parse(value)
        if number < 0 or (number == 0 and not allow_zero):
            raise ValueError(f"expected a {'non-negative' if allow_zero else 'positive'} value, got {value!r}")
        return number
    return parse_positive


def size_field(value: Any, allow_zero: bool = False) -> int:
    return int(positive_field(parse_size, allow_zero)(value))


def number_field(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def bandwidth_field(value: Any) -> float:
    """'25.6 GB/s' or '1.5GiB/s' (a size per second) or a plain number of bytes per second."""
    if isinstance(value, str):
        value = value.strip().removesuffix("/s").removesuffix("ps")
    return float(parse_size(value))


def fraction_field(value: Any) -> float:
    number = number_field(value)
    if not 0 < number <= 1:
        raise ValueError(f"expected a fraction in (0, 1], got {value!r}")
    return number


def boolean_field(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def basis_field(value: Any) -> str:
    if value not in BASES:
        raise ValueError(f"expected one of {', '.join(BASES)}, got {value!r}")
    return value


def tier_field(value: Any) -> str:
    if value not in TIERS:
        raise ValueError(f"expected one of {', '.join(TIERS)}, got {value!r}")
    return value


def precisions_field(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(p not in PRECISIONS for p in value):
        raise ValueError(f"expected a non-empty list drawn from {', '.join(PRECISIONS)}, got {value!r}")
    return tuple(p for p in PRECISIONS if p in value)


def aliases_field(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(a, str) and a.strip() for a in value):
        raise ValueError(f"expected a list of names, got {value!r}")
    return tuple(normalize_name(a) for a in value)


def op_types_field(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(op, str) and op.isidentifier() for op in value):
        raise ValueError(f"expected a non-empty list of ONNX op types such as [\"Conv\", \"Gemm\"], got {value!r}")
    return tuple(value)


def custom_ops_field(value: Any) -> tuple[str, ...]:
    """Ops the user wrote a kernel for: 'DOMAIN.NAME' for a custom-domain op, or a standard op's name."""
    if not isinstance(value, list) or not all(isinstance(op, str) for op in value):
        raise ValueError(f"expected a list of op names such as [\"com.example.Frobnicate\"], got {value!r}")
    return tuple(custom_op_name(op) for op in value)


def custom_op_name(name: str) -> str:
    """A declared custom op as judging keys it: 'com.example.Frobnicate', or 'Erf' for a standard op."""
    key = name.strip()
    if not key or not all(part.isidentifier() for part in key.split(".")):
        raise ValueError(f"expected an op as DOMAIN.NAME (e.g. com.example.Frobnicate) or a standard op's name, "
                         f"got {name!r}")
    return key.removeprefix("ai.onnx.") if key.count(".") == 2 else key   # ai.onnx.Erf is the standard Erf


def efficiency_field(value: Any) -> dict[str, float]:
    """One fraction for every precision, or a table per precision: {fp32 = 0.2, int8 = 0.05}."""
    if isinstance(value, dict):
        if not value or any(p not in PRECISIONS for p in value):
            raise ValueError(f"expected a fraction or a table of fractions by precision ({', '.join(PRECISIONS)})")
        return {p: fraction_field(v) for p, v in value.items()}
    fraction = fraction_field(value)
    return {p: fraction for p in PRECISIONS}


def peak_gmacs_field(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise ValueError("expected a table of GMAC/s per precision, e.g. {fp32 = 0.24, int8 = 0.96}")
    rates = {}
    for precision, gmacs in value.items():
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r} (expected {', '.join(PRECISIONS)})")
        rate = number_field(gmacs)
        if rate <= 0:
            raise ValueError(f"{precision}: expected a positive GMAC/s rate, got {gmacs!r}")
        rates[precision] = rate * 1e9
    return rates


def operator_list_field(value: Any) -> str:
    """The name of one of edgefit's operator lists; loading it checks that it exists."""
    from edgefit.devices.operators import load_operator_list

    return load_operator_list(text_field(value)).name


def memory_model_field(value: Any) -> str:
    name = text_field(value)
    if name not in MEMORY_MODELS:
        raise ValueError(f"unknown memory model {name!r}: expected one of {', '.join(MEMORY_MODELS)}")
    return name


