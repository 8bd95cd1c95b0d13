"""Run fuzz cases against the edgefit CLI and check its contracts.

Each case runs in its own process, forked from a parent that has imported edgefit once (a fresh interpreter per
case would spend most of the time importing), with an empty temporary working directory, stdout and stderr
captured to files, and a wall-clock limit. The contracts, one failure class each:

    traceback      a Python traceback on stderr
    exit_code      an exit code outside 0/1/2 (3, the internal-error code, counts here too)
    error_lines    exit 2 whose stderr is not exactly one `error: ...` line
    hang           still running after the time limit (killed)
    rss            peak resident memory above the limit
    input_modified a file the case created changed
    partial_output the requested output (or a temp file beside it) exists after a failure
    invalid_json   --json (or --format json) and exit 0/1, but stdout is not one JSON object
    cwd_files      anything left in the working directory
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import select
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mutations import DEV_ZERO, DIRECTORY, FIFO, LOOP, Case

CLASSES = ("traceback", "exit_code", "error_lines", "hang", "rss", "input_modified", "partial_output",
           "invalid_json", "cwd_files")


@dataclass
class Outcome:
    case: Case
    code: int | None
    seconds: float
    rss_bytes: int
    stdout: str
    stderr: str
    failures: list[str] = field(default_factory=list)


def _materialize(case: Case, root: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    folder, out, cwd = root / "in", root / "out", root / "cwd"
    for directory in (folder, out, cwd):
        directory.mkdir()
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == FIFO:
            os.mkfifo(path)
        elif content == DEV_ZERO:
            os.symlink("/dev/zero", path)
        elif content == LOOP:
            os.symlink(path.name, path)
        elif content == DIRECTORY:
            path.mkdir()
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder, out, cwd, _hashes(folder)


def _hashes(folder: Path) -> dict[str, str]:
    found = {}
    for path in folder.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _child(argv: list[str], cwd: Path, stdout: Path, stderr: Path, memory_cap: int) -> None:
    """In the forked process: become `edgefit ARGV` run from `cwd`, as the console script would."""
    try:
        os.chdir(cwd)
        out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.setsid()
        # A safety net for the machine, far above the limit the rss class checks.
        resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))
        sys.argv = ["edgefit", *argv]
        from edgefit.cli import run

        try:
            run()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught exception
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        code = 1
    os._exit(code)


def run_case(case: Case, *, timeout_s: float = 60.0, rss_limit: int = 2 * 2**30,
             memory_cap: int = 12 * 2**30) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="edgefit-fuzz-") as temp:
        root = Path(temp)
        folder, out, cwd, before = _materialize(case, root)
        argv = [a.replace("{in}", str(folder)).replace("{out}", str(out)) for a in case.argv]
        stdout, stderr = root / "stdout", root / "stderr"
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(argv, cwd, stdout, stderr, memory_cap)
        code, usage, hung = None, None, False
        while True:
            finished, status, usage = os.wait4(pid, os.WNOHANG)
            if finished:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() - start > timeout_s:
                hung = True
                os.killpg(pid, signal.SIGKILL)
                _, status, usage = os.wait4(pid, 0)
                break
            select.select([], [], [], 0.01)
        seconds = time.perf_counter() - start
        outcome = Outcome(case, code, seconds, usage.ru_maxrss * 1024 if usage else 0,
                          stdout.read_text(errors="replace"), stderr.read_text(errors="replace"))
        outcome.failures = _judge(case, outcome, hung, rss_limit, folder, out, cwd, before)
        return outcome


def _judge(case: Case, outcome: Outcome, hung: bool, rss_limit: int, folder: Path, out: Path, cwd: Path,
           before: dict[str, str]) -> list[str]:
    failed = []
    code, err = outcome.code, outcome.stderr
    if "Traceback (most recent call last)" in err:
        failed.append("traceback")
    if hung:
        failed.append("hang")
    elif code not in (0, 1, 2):
        failed.append("exit_code")
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        if len(lines) != 1 or not lines[0].startswith("error: "):
            failed.append("error_lines")
    if outcome.rss_bytes > rss_limit:
        failed.append("rss")
    after = _hashes(folder)
    if any(after.get(name) != digest for name, digest in before.items()):
        failed.append("input_modified")
    if code not in (0, 1) and not hung:
        written = _written(case, folder, out, set(before))
        if written:
            failed.append("partial_output")
    if case.json and code in (0, 1) and not hung:
        try:
            value = json.loads(outcome.stdout)
            if not isinstance(value, dict):
                raise ValueError("not an object")
        except ValueError:
            failed.append("invalid_json")
    if any(cwd.iterdir()):
        failed.append("cwd_files")
    return failed


def _written(case: Case, folder: Path, out: Path, existing: set[str]) -> list[str]:
    """Files a failed run left: anything new in the output folder, new model files or temp files beside the
    input (where the default output goes)."""
    left = [str(p) for p in out.rglob("*") if p.is_file() or p.is_symlink()]
    for path in folder.rglob("*"):
        name = str(path.relative_to(folder))
        if name not in existing and path.is_file():
            left.append(str(path))
    return left


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    counts = Counter(f for o in outcomes for f in dict.fromkeys(o.failures))
    return {name: counts.get(name, 0) for name in CLASSES}


def describe(outcome: Outcome) -> str:
    tail = outcome.stderr.strip().splitlines()[-3:]
    return (f"case {outcome.case.number} [{outcome.case.kind}] {outcome.failures} exit {outcome.code} "
            f"{outcome.seconds:.1f}s rss {outcome.rss_bytes / 2**20:.0f} MiB: edgefit "
            f"{' '.join(map(repr, outcome.case.argv))}\n    " + "\n    ".join(tail))


def preload() -> None:
    """Import every edgefit module (and onnxruntime), once, in the parent: each forked case starts warm, and a
    long run tests one snapshot of the code even while the files change on disk."""
    import importlib
    import pkgutil

    import edgefit
    import onnxruntime  # noqa: F401
    import onnxruntime.quantization  # noqa: F401

    for module in pkgutil.walk_packages(edgefit.__path__, "edgefit."):
        if module.name != "edgefit.__main__":
            importlib.import_module(module.name)
