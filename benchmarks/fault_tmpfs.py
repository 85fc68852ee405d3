"""Disk full at every write stage: `icechart predict` on a tiny tmpfs must exit 74 with one error
line naming the file, and leave nothing in OUT (no product, no temporary, no manifest).

Needs root (it mounts a tmpfs). A reference run learns the size of every product; then, for
each stage (netCDF, GeoTIFF, shapefile, PNG, manifest) and each of --runs repetitions, a filler
file leaves exactly the space of the earlier stages plus a random part of that stage's files,
and predict runs into it. Prints one line per run and a summary table; exit 1 when any run
gave another code, left files behind, printed raw library text, or crashed (e.g. rc 139).

    python benchmarks/fault_tmpfs.py --runs 20 --size 1000x1000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from _fixtures import scenes_and_model

PAGE = 4096
CLAIM_PAGES = 1
"""The scene's claim file (OUT/.claim-*, holding the pid) takes one page for the whole run."""
STAGES = ("netcdf", "geotiff", "shapefile", "png", "manifest")


def stage_of(name: str) -> str:
    if name.endswith(".manifest.json"):
        return "manifest"
    if name.endswith(".nc"):
        return "netcdf"
    if "_sigrid3." in name:
        return "shapefile"
    if name.endswith((".tif", ".tif.aux.xml", ".qml")):  # a GeoTIFF and its sidecars
        return "geotiff"
    return "png"


def pages(n: int) -> int:
    return math.ceil(n / PAGE)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--size", default="1000x1000")
    ap.add_argument("--mount", default="/mnt/icechart-full")
    ap.add_argument("--work", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="icechart-fault-"))
    py = sys.executable
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    scenes, model = scenes_and_model(work, n=1, size=args.size, seed=3, env=env)
    mnt = Path(args.mount)
    mnt.mkdir(parents=True, exist_ok=True)

    def mount(kib: int) -> None:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mnt)], check=True)

    def predict(out: Path) -> subprocess.CompletedProcess:
        cmd = [py, "-m", "icechart", "-q", "predict", str(scenes), "-o", str(out), "--model", str(model),
               "--device", "cpu"]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)

    mount(64 * 1024)
    ref = predict(mnt / "out")
    if ref.returncode != 0:
        print(ref.stderr)
        return 2
    manifest = json.loads(next((mnt / "out").glob("*.manifest.json")).read_text())
    sizes: dict[str, int] = {f["name"]: f["size"] for f in manifest["files"]}
    sizes[next((mnt / "out").glob("*.manifest.json")).name] = (next((mnt / "out").glob("*.manifest.json"))).stat().st_size
    by_stage = {s: sum(pages(v) for k, v in sizes.items() if stage_of(k) == s) for s in STAGES}
    print("pages per stage:", by_stage, flush=True)
    total_pages = sum(by_stage.values()) + 64
    results: dict[str, list[tuple[int, bool, bool]]] = {s: [] for s in STAGES}
    bad = 0
    for run in range(args.runs):
        for k, stage in enumerate(STAGES):
            mount(total_pages * PAGE // 1024 + 64)
            before = CLAIM_PAGES + sum(by_stage[s] for s in STAGES[:k])
            part = max(0, min(by_stage[stage] - 1, int(by_stage[stage] * rng.uniform(0.05, 0.95))))
            free_pages = before + part
            st = os.statvfs(mnt)
            filler_pages = st.f_bavail * st.f_frsize // PAGE - free_pages
            with open(mnt / "filler", "wb") as fh:
                fh.write(b"\0" * (filler_pages * PAGE))
            out = mnt / "out"
            r = predict(out)
            left = sorted(p.name for p in out.iterdir()) if out.exists() else []
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            raw = [ln for ln in lines if not ln.startswith("icechart: ")]
            errors = [ln for ln in lines if ln.startswith("icechart: error:")]
            ok = r.returncode == 74 and not left and not raw and len(errors) == 1
            bad += not ok
            results[stage].append((r.returncode, not left, not raw))
            print(f"run {run + 1:2d} {stage:9s} free={free_pages * 4:5d}KiB rc={r.returncode} left={left} "
                  f"raw={len(raw)} {'ok' if ok else 'BAD'}: {errors[-1] if errors else lines[-1:]}", flush=True)
    print("\nstage      runs  rc=74  nothing-left  no-raw-text")
    for s in STAGES:
        rs = results[s]
        print(f"{s:9s} {len(rs):5d} {sum(r[0] == 74 for r in rs):6d} {sum(r[1] for r in rs):13d} {sum(r[2] for r in rs):12d}")
    subprocess.run(["umount", str(mnt)], capture_output=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
