"""Fuzz edgefit's command line: seeded hostile cases, counts per failure class (tests/fuzz/harness.py).

    python benchmarks/fuzz.py --cases 3000            # the full run (about 20 minutes on one core)
    python benchmarks/fuzz.py --cases 200 --seed 7    # another sample
    python benchmarks/fuzz.py --case 1234             # re-run one case and show its output

Target: zero failures in every class; exits 1 otherwise. Cases run one at a time (forked from this process).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

from harness import CLASSES, describe, preload, run_case, summarize  # noqa: E402
from mutations import clean_cases, make_case  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--start", type=int, default=0, help="first case number")
    parser.add_argument("--case", type=int, help="run only this case and print its output")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    parser.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    parser.add_argument("--clean", action="store_true", help="run every command on good input instead (all must "
                        "exit 0 or 1 and break no contract)")
    args = parser.parse_args()
    preload()
    if args.case is not None:
        outcome = run_case(make_case(args.seed, args.case), timeout_s=args.timeout)
        print(describe(outcome))
        print("--- stdout\n" + outcome.stdout[:4000] + "\n--- stderr\n" + outcome.stderr[:4000])
        return 1 if outcome.failures else 0
    outcomes, start = [], time.perf_counter()
    cases = clean_cases() if args.clean else (make_case(args.seed, n) for n in range(args.start,
                                                                                   args.start + args.cases))
    for number, case in enumerate(cases, start=args.start):
        outcome = run_case(case, timeout_s=args.timeout)
        if args.clean and outcome.code not in (0, 1):
            outcome.failures.append("exit_code")
        outcomes.append(outcome)
        if outcome.failures:
            print(describe(outcome), flush=True)
        if (number - args.start + 1) % 250 == 0:
            print(f"... {number - args.start + 1} cases, {time.perf_counter() - start:.0f} s", file=sys.stderr,
                  flush=True)
    counts = summarize(outcomes)
    codes = {str(code): sum(o.code == code for o in outcomes) for code in sorted({o.code for o in outcomes},
                                                                                key=str)}
    slowest = max(outcomes, key=lambda o: o.seconds)
    report = {"cases": len(outcomes), "seed": args.seed, "failures": counts, "exit_codes": codes,
              "seconds": round(time.perf_counter() - start, 1), "slowest_case_s": round(slowest.seconds, 1),
              "max_rss_mib": round(max(o.rss_bytes for o in outcomes) / 2**20)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['cases']} cases (seed {args.seed}) in {report['seconds']} s; exit codes {codes}; "
              f"slowest {report['slowest_case_s']} s; peak RSS {report['max_rss_mib']} MiB")
        for name in CLASSES:
            print(f"  {name:<15} {counts[name]}")
    return 1 if any(counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
