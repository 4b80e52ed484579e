"""Run the intake checks on every model of the corpus (``build.py`` makes it) and print one table.

    python tests/corpus/run.py [--filter SUBSTRING] [--models DIR]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from build import MODELS  # noqa: E402
from checks import COLUMNS, check_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--filter", default="")
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("-v", "--verbose", action="store_true", help="print why a check failed")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    paths = [p for p in sorted(glob.glob(os.path.join(args.models, "*.onnx"))) if args.filter in os.path.basename(p)]
    if not paths:
        sys.exit(f"no models in {args.models}: run python tests/corpus/build.py first")
    print(f"{'model':<44} {'exporter':<34} {'class output':<30} " + " ".join(f"{c[:8]:>8}" for c in COLUMNS[1:]))
    totals = dict.fromkeys(COLUMNS, 0)
    failures = []
    t0 = time.perf_counter()
    for p in paths:
        name = os.path.basename(p)[:-5]
        row, info = check_model(p)
        for c in COLUMNS:
            totals[c] += bool(row[c][0])
            if not row[c][0]:
                failures.append(f"{name}: {c}: {row[c][1]}")
        out = row["output"][1] if row["output"][0] else f"FAIL {row['output'][1]}"
        print(f"{name[:44]:<44} {info.get('exporter', '?')[:34]:<34} {str(out)[:30]:<30} "
              + " ".join(f"{'ok' if row[c][0] else 'FAIL':>8}" for c in COLUMNS[1:]), flush=True)
    n = len(paths)
    print(f"{'totals':<110} " + " ".join(f"{totals[c]:>4}/{n:<3}" for c in COLUMNS[1:]))
    print(f"class output chosen: {totals['output']}/{n}; {n} models, {time.perf_counter() - t0:.0f} s")
    if args.verbose:
        print("\n".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
