"""The passes by name. A pass is a module of edgefit/passes exporting `PASS = SomePass` (a edgefit.passes.base.Pass
subclass); adding a pass is adding that file (and its test): nothing here or in the pipeline changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path

from edgefit.errors import ConfigError
from edgefit.passes.base import Pass


@cache
def passes() -> dict[str, type[Pass]]:
    """Every pass, by name, in name order."""
    found: dict[str, type[Pass]] = {}
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        cls = getattr(importlib.import_module(f"edgefit.passes.{module.name}"), "PASS", None)
        if cls is not None:
            found[cls.name] = cls
    return dict(sorted(found.items()))


def get_pass(name: str) -> Pass:
    cls = passes().get(name)
    if cls is None:
        raise ConfigError(f"unknown pass {name!r} in --passes; passes are {', '.join(passes())}")
    return cls()
