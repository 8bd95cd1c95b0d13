"""The fast fuzz subset (CI): seeded hostile runs of every command must break no contract, and every command
on good input must exit 0 or 1 and leave its empty working directory empty (tests/fuzz/harness.py).

The cases run in a fresh process (benchmarks/fuzz.py) that forks one child per case: forking this pytest
process, which has run onnxruntime sessions with their thread pools, would not be safe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAST_CASES = 200


def _run(tmp_path: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz.py"), "--json", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    failing = "\n".join(done.stdout.strip().splitlines()[:-1])
    assert report["failures"] == {name: 0 for name in report["failures"]}, failing
    assert done.returncode == 0 and list(tmp_path.iterdir()) == []
    return report


@pytest.mark.fuzz
def test_every_command_on_good_input_keeps_its_contracts_and_an_empty_cwd(tmp_path):
    report = _run(tmp_path, "--clean")
    assert report["cases"] == 33 and set(report["exit_codes"]) <= {"0", "1"}


@pytest.mark.fuzz
def test_fast_fuzz_subset_breaks_no_contract(tmp_path):
    report = _run(tmp_path, "--cases", str(FAST_CASES), "--seed", "20261129", "--timeout", "60")
    assert report["cases"] == FAST_CASES
    # The generator reaches every outcome, not only refusals.
    assert {"0", "2"} <= set(report["exit_codes"])
