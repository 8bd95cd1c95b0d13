"""The distribution's name and version, as `edgefit --version` prints them.

The project is published as `edgefit-onnx`: the name `edgefit` on PyPI belongs to an unrelated project (an
on-device inference measurement harness). The command and the import package stay `edgefit` (see
docs/index.md, "Names"). The version is read from the installed distribution's metadata, so it is the one
pip installed, never a copy that can drift.
"""

from __future__ import annotations

DISTRIBUTION = "edgefit-onnx"


def distribution_version() -> str:
    """`edgefit-onnx 0.1.0`; `(not installed)` in place of the version when run from a bare source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{DISTRIBUTION} {version(DISTRIBUTION)}"
    except PackageNotFoundError:
        return f"{DISTRIBUTION} (not installed: run pip install -e . in the checkout)"
