"""Reading the TOML files edgefit takes (profiles, measurements, edgefit.toml): size and type checks, one-line
errors that name the file."""

from __future__ import annotations

import errno
import stat
import tomllib
from pathlib import Path
from typing import Any

from edgefit.errors import EdgefitError

# Profiles and gate configs are a few kilobytes; a larger file is not one of them.
_MAX_TOML_BYTES = 16 * 2**20


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's table. UTF-8, with or without the byte order mark Windows editors write. Raises OSError
    (also for a FIFO, device or oversized file, which are never read), UnicodeDecodeError (not UTF-8) or
    tomllib.TOMLDecodeError (also for tables nested too deeply for the parser's recursion)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a folder, FIFO or device)")
    if info.st_size > _MAX_TOML_BYTES:
        raise OSError(errno.EFBIG, f"{info.st_size:,} bytes, too large for a TOML configuration")
    text = path.read_bytes().decode("utf-8-sig")
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("arrays or tables nested too deeply") from None


def toml_problem(error: ValueError) -> str:
    """Why a file is not valid TOML, in one line (for read_toml's ValueErrors)."""
    if isinstance(error, UnicodeDecodeError):
        return f"not valid TOML: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})"
    return f"not valid TOML: {error}"


def load_toml(path: Path, error: type[EdgefitError], what: str, missing: str | None = None) -> dict[str, Any]:
    """A TOML file edgefit reads (a profile, measurements, edgefit.toml), every problem one `error` naming the file:
    'cannot read WHAT: why', not UTF-8, not valid TOML; `missing`: what to say instead when there is no such file."""
    try:
        return read_toml(path)
    except OSError as problem:
        if missing is not None and isinstance(problem, FileNotFoundError):
            raise error(f"{path}: {missing}") from None
        raise error(f"{path}: cannot read {what}: {problem.strerror or problem}") from None
    except ValueError as problem:   # tomllib.TOMLDecodeError, UnicodeDecodeError
        raise error(f"{path}: {toml_problem(problem)}") from None


