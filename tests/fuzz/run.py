"""Run the fuzz targets under atheris (coverage-guided, libFuzzer) and report executions and coverage.

    python tests/fuzz/run.py --seconds 600                 # both targets, 600 s each
    python tests/fuzz/run.py --target image --seconds 60 --workdir /tmp/fuzz

Each target starts from its seed corpus (tests/fuzz/corpus/<target>, read only) plus what earlier runs in
the same --workdir found. A crash — any exception but OnnxplainError, a timeout, running out of memory —
is written to <workdir>/<target>/crash-*; copy it to tests/fuzz/crashes/<target>/ to make it a regression
test (tests/test_robustness.py replays every file there). libFuzzer stops at the first crash; --keep-going
restarts it until the time is up and lists every distinct crash. Exit status 1 when a target crashed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ("model", "image")


def _signature(log: str) -> str:
    """What crashed: the exception and the innermost frame of the uncaught-exception report."""
    report = log.split("=== Uncaught Python exception: ===", 1)
    if len(report) < 2:
        hit = re.search(r"ERROR: libFuzzer: (\S+)", log)
        return hit.group(1) if hit else "unknown"
    lines = report[1].strip().splitlines()
    frames = [ln.strip() for ln in lines if ln.strip().startswith("File ")]
    return f"{lines[0].strip()} at {frames[-1] if frames else '?'}"


def run_target(target: str, seconds: int, workdir: str, timeout: int = 30, rss_mb: int = 3072,
               keep_going: bool = False) -> dict:
    """Fuzz one target for ``seconds``; {target, seconds, execs, cov, ft, corpus, crashes, signatures, log}.

    libFuzzer stops at the first crash; with ``keep_going`` it is restarted on the corpus found so far
    until the time is used up, and every distinct crash is listed (``signatures``)."""
    work = os.path.join(workdir, target)
    corpus = os.path.join(work, "corpus")
    os.makedirs(corpus, exist_ok=True)
    env = dict(os.environ, ONNXPLAIN_DISABLE_CUDA="1", OMP_NUM_THREADS="1")
    end, execs, stats, signatures, logs, code = time.monotonic() + seconds, 0, None, {}, [], 0
    while True:
        left = int(end - time.monotonic())
        if left < 5 and logs:
            break
        cmd = [sys.executable, os.path.join(HERE, "targets.py"), target, corpus, os.path.join(HERE, "corpus", target),
               f"-max_total_time={max(left, 1)}", f"-timeout={timeout}", f"-rss_limit_mb={rss_mb}",
               "-print_final_stats=1", f"-artifact_prefix={work}{os.sep}", "-max_len=65536"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=left + 300)
        log = proc.stdout + proc.stderr
        logs.append(log)
        code = code or proc.returncode
        done = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
        execs += int(done[-1]) if done else 0
        cov = re.findall(r"\bcov: (\d+) ft: (\d+) corp: (\d+)", log)
        stats = cov[-1] if cov else stats
        if proc.returncode == 0:
            break
        signatures.setdefault(_signature(log), 0)
        signatures[_signature(log)] += 1
        if not keep_going:
            break
    with open(os.path.join(work, "fuzz.log"), "w") as f:
        f.write("\n\n".join(logs))
    crashes = sorted(os.path.join(work, f) for f in os.listdir(work) if f.startswith(("crash-", "timeout-", "oom-")))
    return {"target": target, "seconds": seconds, "execs": execs, "cov": int(stats[0]) if stats else None,
            "ft": int(stats[1]) if stats else None, "corpus": int(stats[2]) if stats else None,
            "crashes": crashes, "signatures": signatures, "returncode": code, "log": os.path.join(work, "fuzz.log")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=TARGETS + ("all",), default="all")
    ap.add_argument("--seconds", type=int, default=60, help="per target")
    ap.add_argument("--workdir", default=None, help="kept between runs (default: a new temporary folder)")
    ap.add_argument("--timeout", type=int, default=30, help="seconds one input may take")
    ap.add_argument("--keep-going", action="store_true",
                    help="after a crash, restart on the corpus so far until the time is used up")
    args = ap.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="onnxplain-fuzz-")
    results = [run_target(t, args.seconds, workdir, args.timeout, keep_going=args.keep_going)
               for t in (TARGETS if args.target == "all" else (args.target,))]
    print(json.dumps(results, indent=2))
    return 1 if any(r["crashes"] or r["returncode"] not in (0,) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
