"""SIGINT/SIGTERM/SIGHUP at random moments of `icechart predict`: every interrupted run must end
130/143/129 (never 0, never 134 or another crash), leave no temporary file and no product set
without its manifest, and a rerun must complete every scene (exit 0).

A reference run measures how long a run takes; each trial sends one signal at a uniformly random
time in [0, that duration) — during the imports, the model load, prediction or the writes.
A run that finished before its signal counts as "finished first" (not a failure, not counted
as interrupted).

    python benchmarks/signals_random.py --trials 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _fixtures import scenes_and_model

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def check_out(out: Path) -> list[str]:
    """Problems in OUT: temporaries, product files that no manifest lists, listed files missing."""
    if not out.exists():
        return []
    names = {p.name for p in out.iterdir()}
    problems = [f"temporary {n}" for n in names if n.startswith(".tmp-")]
    listed: set[str] = set()
    for m in out.glob("*.manifest.json"):
        data = json.loads(m.read_text())
        for f in data["files"]:
            listed.add(f["name"])
            if f["name"] not in names:
                problems.append(f"{m.name} lists missing {f['name']}")
    for n in names:
        if not n.startswith(".") and not n.endswith(".manifest.json") and n not in listed:
            problems.append(f"unlisted product {n}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--size", default="300x280")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="icechart-signals-"))
    py = sys.executable
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    scenes, model = scenes_and_model(work, n=args.scenes, size=args.size, seed=4, env=env)

    def cmd(out: Path) -> list[str]:
        return [py, "-m", "icechart", "-q", "predict", str(scenes), "-o", str(out), "--model", str(model),
                "--device", "cpu"]

    t0 = time.monotonic()
    ref = subprocess.run(cmd(work / "ref"), capture_output=True, text=True, env=env)
    duration = time.monotonic() - t0
    if ref.returncode != 0:
        print(ref.stderr)
        return 2
    print(f"reference run: {duration:.1f} s", flush=True)
    counts: Counter[str] = Counter()
    bad = 0
    for k in range(args.trials):
        sig = SIGNALS[k % 3]
        out = work / f"out{k}"
        delay = rng.uniform(0, duration)
        p = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(delay)
        sent = p.poll() is None
        if sent:
            p.send_signal(sig)
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            err += "\n(hung: killed)"
        # Killed by the signal itself (it came before Python installed any handler, in the first
        # milliseconds of interpreter start-up): a shell or cron sees 128 + N, as documented.
        rc = 128 - p.returncode if p.returncode < 0 else p.returncode
        problems = check_out(out)
        re = subprocess.run(cmd(out), capture_output=True, text=True, env=env)
        complete = len(list(out.glob("*.manifest.json"))) == args.scenes and not check_out(out)
        expect = 128 + int(sig)
        if not sent:
            verdict = "finished-first" if rc == 0 else "BAD"
        else:
            verdict = "ok" if rc == expect else ("finished-first" if rc == 0 and "received" not in err else "BAD")
        ok = verdict != "BAD" and not problems and re.returncode == 0 and complete
        bad += not ok
        counts[f"{signal.Signals(sig).name} rc={rc}"] += 1
        tail = err.strip().splitlines()[-1:] if err.strip() else []
        print(f"trial {k + 1:2d} {signal.Signals(sig).name:7s} at {delay:5.2f}s rc={rc:4d} {verdict:14s} "
              f"left={problems or '-'} rerun={re.returncode}{'' if complete else ' INCOMPLETE'} "
              f"{'ok' if ok else 'BAD'} {tail}", flush=True)
    print("\nby signal and exit code:")
    for key, n in sorted(counts.items()):
        print(f"  {key:16s} {n}")
    print(f"trials with a problem: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
