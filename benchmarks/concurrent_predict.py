"""Two `icechart predict` runs started together on one OUT, without --lock: both must exit 0 and
every scene must be made exactly once (one run charts it, the other finds it claimed or done),
with one manifest per scene listing exactly the product files in OUT.

    python benchmarks/concurrent_predict.py --scenes 6 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _fixtures import scenes_and_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--size", default="300x280")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="icechart-concurrent-"))
    py = sys.executable
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    scenes, model = scenes_and_model(work, n=args.scenes, size=args.size, seed=8, env=env)
    failures = 0
    for rep in range(args.repeat):
        out = work / f"out{rep}"
        cmd = [py, "-m", "icechart", "predict", str(scenes), "-o", str(out), "--model", str(model), "--device", "cpu"]
        procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
        errs = [p.communicate(timeout=900)[1] for p in procs]
        codes = [p.returncode for p in procs]
        made: Counter[str] = Counter()
        status = []
        for e in errs:
            ok = re.findall(r"INFO: (\d{8}T\d{6}_[a-z]+) ok ", e)
            made.update(ok)
            status.append(f"{len(ok)} ok/{len(re.findall(r' skipped ', e))} skipped")
        names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
        listed = set()
        for m in out.glob("*.manifest.json"):
            listed |= {f["name"] for f in json.loads(m.read_text())["files"]} | {m.name}
        hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
        once = len(made) == args.scenes and all(n == 1 for n in made.values())
        ok = codes == [0, 0] and once and names == listed and not hidden
        failures += not ok
        print(f"repeat {rep + 1}: exit codes {codes}; run A {status[0]}, run B {status[1]}; "
              f"scenes made once: {sum(n == 1 for n in made.values())}/{args.scenes}, twice or more: "
              f"{sum(n > 1 for n in made.values())}; manifests {len(list(out.glob('*.manifest.json')))}; "
              f"unlisted files {sorted(names - listed) or '-'}; leftovers {hidden or '-'} -> {'ok' if ok else 'BAD'}",
              flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
