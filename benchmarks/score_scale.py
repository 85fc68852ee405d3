"""Time and peak memory of ``icechart score`` on 20 full-size (5000 x 5000) synthetic scenes.

Generates, once, into a cache directory: ``{id}_reference.nc`` label files (SIC/SOD/FLOE on
``sar_lines x sar_samples``, like ``icechart synth --test`` writes) and matching icechart
prediction products ``{id}_bench.nc`` (the labels with 15 % of pixels replaced by random
classes, 255 where the labels are; SIC in percent with ``units "%"``). Then scores them in a fresh
subprocess (so generation memory does not count) through the same library call the CLI makes,
and prints a table and a JSON line.

Usage::

    .venv/bin/python benchmarks/score_scale.py [--cache DIR] [--scenes 20] [--size 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHARTS = ("SIC", "SOD", "FLOE")
N_CLASSES = {"SIC": 11, "SOD": 6, "FLOE": 7}


def _labels(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Blocky charts: constant classes over 50 x 50 cells, land and NaN-border masks."""
    cells = -(-n // 50)
    out = {}
    ice = rng.random((cells, cells)) > 0.25
    for c in CHARTS:
        coarse = rng.integers(1, N_CLASSES[c], (cells, cells)).astype(np.uint8)
        coarse[~ice] = 0
        out[c] = np.repeat(np.repeat(coarse, 50, 0), 50, 1)[:n, :n]
    land = np.zeros((n, n), bool)
    land[:, : n // 10] = True  # a land strip
    land[: n // 50] = True  # swath border
    for c in CHARTS:
        out[c][land] = 255
    return out


def generate(cache: Path, n_scenes: int, size: int) -> list[Path]:
    import netCDF4

    cache.mkdir(parents=True, exist_ok=True)
    refs = []
    for k in range(n_scenes):
        sid = f"20210{1 + k // 28:01d}{1 + k % 28:02d}T120000_dmi"
        ref = cache / "refs" / f"{sid}_reference.nc"
        pred = cache / "preds" / f"{sid}_bench.nc"
        refs.append(ref)
        if ref.exists() and pred.exists():
            continue
        ref.parent.mkdir(exist_ok=True)
        pred.parent.mkdir(exist_ok=True)
        rng = np.random.default_rng(k)
        lab = _labels(rng, size)
        for path, charts, percent in ((ref, lab, False), (pred, None, True)):
            if charts is None:
                charts = {}
                for c in CHARTS:
                    p = np.where(lab[c] == 255, 255, lab[c]).astype(np.uint8)
                    flip = rng.random(p.shape, dtype=np.float32) < 0.15
                    p[flip] = rng.integers(0, N_CLASSES[c], int(flip.sum()), dtype=np.uint8)
                    charts[c] = p
            tmp = path.with_suffix(".tmp")
            with netCDF4.Dataset(tmp, "w") as nc:
                nc.scene_id = path.name
                nc.createDimension("sar_lines", size)
                nc.createDimension("sar_samples", size)
                for c in CHARTS:
                    v = nc.createVariable(
                        c, "u1", ("sar_lines", "sar_samples"), zlib=True, complevel=1,
                        chunksizes=(256, size),
                    )
                    a = charts[c]
                    if c == "SIC" and percent:
                        v.units = "%"
                        a = np.where(a == 255, 255, a.astype(np.int32) * 10).astype(np.uint8)
                    v[:] = a
            os.replace(tmp, path)
        print(f"generated {sid}", file=sys.stderr)
    return refs


def _score_child(cache: str) -> None:
    import resource

    from icechart.pipeline.score import score_paths

    t0 = time.perf_counter()
    report = score_paths([Path(cache) / "refs"], [Path(cache) / "preds"])
    dt = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    doc = report.to_dict()
    print(json.dumps({
        "seconds": dt,
        "peak_rss_mib": peak_kib / 1024.0,
        "scenes": len(doc["scenes"]),
        "pixels_per_chart": doc["charts"]["SIC"]["n_pixels"],
        "autoice": doc["autoice"],
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.environ.get("ICECHART_BENCH_CACHE", "/tmp/icechart-bench-score"))
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    cache = Path(args.cache) / f"{args.scenes}x{args.size}"
    if args.child:
        _score_child(str(cache))
        return
    t0 = time.perf_counter()
    generate(cache, args.scenes, args.size)
    gen = time.perf_counter() - t0
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--cache", args.cache, "--scenes", str(args.scenes),
         "--size", str(args.size)],
        check=True, capture_output=True, text=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["generate_seconds"] = gen
    res["size"] = args.size
    print(f"{'scenes':<24}{res['scenes']}")
    print(f"{'size':<24}{args.size}x{args.size}")
    print(f"{'labelled pixels (SIC)':<24}{res['pixels_per_chart']}")
    print(f"{'score time (s)':<24}{res['seconds']:.1f}")
    print(f"{'peak RSS (MiB)':<24}{res['peak_rss_mib']:.0f}")
    print(f"{'AutoICE':<24}{res['autoice']}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
