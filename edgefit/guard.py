"""Checks every command runs on what a user hands it -- files to read, paths to write, array data -- before
edgefit reads, allocates or writes anything. Each raises the EdgefitError subclass the caller names, with one
line saying what is wrong; the CLI turns it into exit code 2.

Shapes and dimensions are checked in edgefit.shapes (parse_input_shapes, parse_dims, resolve_shapes), the
model's tensors and types in edgefit.model.validate, profile and gate files where they are parsed.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import zipfile
from pathlib import Path

from edgefit.errors import EdgefitError

# Synthetic inputs (fidelity, calibration) are sized from this budget whatever the declared batch: a model
# whose batch axis is bound to a million rows gets as many samples as fit, or a refusal when one does not.
SYNTHETIC_BUDGET_BYTES = 256 * 2**20
# onnxruntime runs (fidelity, calibration) of a model whose activation arena at the bound shapes exceeds this
# are refused up front: a batch bound to a million rows would otherwise grow the process by gigabytes.
RUN_BUDGET_BYTES = 2**30
# User data files (--calib, --eval) are refused above this many bytes of arrays, read from their headers
# before any array is loaded (a crafted header can announce terabytes in a 100-byte file).
DATA_BUDGET_BYTES = 2**31


def shown(path: str | os.PathLike) -> str:
    """A path (or any text) as printed in a one-line message: control characters such as a newline in a file
    name escaped, so the message stays one line."""
    text = os.fspath(path)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


def first_line(problem: BaseException) -> str:
    """An exception's message in one line (its type when it has none)."""
    lines = str(problem).strip().splitlines()
    return lines[0] if lines else type(problem).__name__


def regular_file(path: str | os.PathLike, what: str, error: type[EdgefitError]) -> Path:
    """`path` as a Path when it names a readable regular file (symlinks followed). A FIFO would block the read
    forever and /dev/zero would never end, so anything else is refused before it is opened."""
    path = Path(path)
    try:
        info = path.stat()
    except ValueError:   # an embedded NUL byte
        raise error(f"{what} path {shown(path)} contains a NUL byte") from None
    except OSError as problem:
        if problem.errno == errno.ELOOP:
            raise error(f"{what} {shown(path)} is a symlink loop") from None
        if problem.errno in (errno.ENOENT, errno.ENOTDIR):
            raise error(f"{what} not found: {shown(path)}") from None
        raise error(f"cannot read {what} {shown(path)}: {problem.strerror or problem}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {shown(path)} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode)
                or stat.S_ISBLK(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file")
        raise error(f"{what} {shown(path)} is {kind}; edgefit reads regular files only")
    return path


def existing_kind(path: str | os.PathLike, what: str, error: type[EdgefitError]) -> str:
    """'missing', 'file' or 'dir' for a path that may be a folder of files; other kinds are refused."""
    path = Path(path)
    try:
        info = path.stat()
    except ValueError:
        raise error(f"{what} path {shown(path)} contains a NUL byte") from None
    except OSError as problem:
        if problem.errno == errno.ELOOP:
            raise error(f"{what} {shown(path)} is a symlink loop") from None
        if problem.errno in (errno.ENOENT, errno.ENOTDIR):
            return "missing"
        raise error(f"cannot read {what} {shown(path)}: {problem.strerror or problem}") from None
    if stat.S_ISDIR(info.st_mode):
        return "dir"
    regular_file(path, what, error)
    return "file"


def output_path(path: str | os.PathLike, error: type[EdgefitError]) -> Path:
    """`path` as a Path when a file can be created or replaced there: no NUL byte, not a folder, a device (as
    root, renaming onto /dev/null would replace it) or another non-regular file, not a symlink loop."""
    path = Path(path)
    text = os.fspath(path)
    if "\0" in text:
        raise error(f"output path {shown(path)} contains a NUL byte")
    try:
        info = path.stat()
    except OSError as problem:
        if problem.errno == errno.ELOOP:
            raise error(f"output path {shown(path)} is a symlink loop") from None
        if problem.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise error(f"cannot write {shown(path)}: {problem.strerror or problem}") from None
        return path   # a new file (a dangling symlink is replaced by the rename, not written through)
    if stat.S_ISDIR(info.st_mode):
        raise error(f"output path {shown(path)} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"output path {shown(path)} exists and is not a regular file")
    return path


def _header_bytes(stream, where: str, error: type[EdgefitError]) -> int:
    """Bytes of the array an .npy stream holds, from its header alone."""
    import numpy as np

    try:
        version = np.lib.format.read_magic(stream)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(stream)
    except Exception as problem:  # noqa: BLE001 - numpy raises ValueError, SyntaxError ... for a malformed header
        raise error(f"cannot read {where}: not a NumPy array file ({first_line(problem)})") from None
    if dtype.hasobject:
        raise error(f"cannot read {where}: it holds an array of Python objects, which edgefit never unpickles; "
                    f"save plain numeric arrays")
    return math.prod(shape) * dtype.itemsize


def array_file_bytes(path: Path, error: type[EdgefitError]) -> int:
    """Bytes an .npy or .npz file's arrays take once loaded, from their headers; refused above the data budget."""
    where = shown(path)
    try:
        with path.open("rb") as handle:
            if handle.read(4) == b"PK\x03\x04":
                handle.seek(0)
                with zipfile.ZipFile(handle) as archive:
                    total = 0
                    for member in archive.infolist():
                        with archive.open(member) as stream:
                            total += _header_bytes(stream, f"{where} ({member.filename})", error)
            else:
                handle.seek(0)
                total = _header_bytes(handle, where, error)
    except EdgefitError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as problem:
        raise error(f"cannot read {where}: {first_line(problem)}") from None
    if total > DATA_BUDGET_BYTES:
        raise error(f"{where} holds {total:,} bytes of arrays, more than the {DATA_BUDGET_BYTES:,} edgefit loads; "
                    f"use fewer samples")
    return total


def check_run_memory(activation_bytes: int, shapes: dict[str, list[int]], error: type[EdgefitError]) -> None:
    """Refuse to run a model whose activations at `shapes` would need more than RUN_BUDGET_BYTES."""
    if activation_bytes > RUN_BUDGET_BYTES:
        given = ", ".join(f"{name}={'x'.join(map(str, shape))}" for name, shape in shapes.items())
        raise error(f"running the model at these input shapes ({given}) needs {activation_bytes:,} bytes of "
                    f"activations, more than the {RUN_BUDGET_BYTES:,} edgefit allows for its fidelity and "
                    f"calibration runs; bind smaller dimensions with --input-shape / --dim")
