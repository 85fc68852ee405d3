"""Benchmark: one scene through `icechart predict` on CPU, seconds per stage and peak RSS.

Usage::

    python benchmarks/predict_scene.py                       # 5000 x 5000
    python benchmarks/predict_scene.py --sizes 2500,5000,10000 --json bench.json
    python benchmarks/predict_scene.py --model models/<id>/ --device cpu

Each size runs in a fresh child process (so peak RSS is that of prediction alone, not of
making the synthetic scene), with the model loaded in that process. Stages: ``read`` (open and
validate), ``features``, ``forward``, ``upsample`` (full-resolution decisions by row block),
``netcdf``, ``geotiff``, ``shapefile``, ``png``, ``manifest``; ``total`` is wall time of
:func:`icechart.infer.run.process_scene`. Targets (issue 6): netCDF product < 5 s, all products
< 15 s, peak RSS < 1.5 GiB, memory flat from 2500 to 10000 pixels a side.

Scenes are synthetic (:mod:`icechart.synth`), cached in ``--workdir``. Without ``--model`` a
random-weights network of the MMSeaIce size (16 channels, filters 32-32-64-64) is used: the
cost does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"netcdf_product_s": 5.0, "all_products_s": 15.0, "peak_rss_gib": 1.5}


def _scene(workdir: Path, size: int) -> Path:
    existing = sorted(workdir.glob(f"scene{size}/*_prep.nc"))
    if existing:
        return existing[0]
    d = workdir / f"scene{size}"
    d.mkdir(parents=True, exist_ok=True)
    print(f"making a {size}x{size} synthetic scene in {d} ...", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "icechart", "-q", "synth", str(d), "--scenes", "1", "--size", f"{size}x{size}", "--seed", "5"],
        check=True,
    )
    return sorted(d.glob("*_prep.nc"))[0]


def _model(workdir: Path) -> Path:
    path = workdir / "random-mmseaice.safetensors"
    if path.exists():
        return path
    from icechart.testing import random_checkpoint

    # the MMSeaIce size (16 channels, filters 32-32-64-64): the cost does not depend on weights
    return random_checkpoint(path, filters=(32, 32, 64, 64))


def child(scene: str, model: str, out: str, device: str, formats: str) -> dict:
    """Runs in the child process: load, predict, write; report timings and peak RSS."""
    import logging

    from icechart.infer.predict import load_model
    from icechart.infer.run import process_scene

    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    m = load_model(model, device=device)
    load_s = time.perf_counter() - t
    timings: dict[str, float] = {}
    Path(out).mkdir(parents=True, exist_ok=True)
    process_scene(scene, m, out, formats=formats, timings=timings)  # replaces earlier products
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"model_load": load_s, **timings, "peak_rss_gib": rss / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="5000", help="comma list of scene sizes (pixels a side)")
    ap.add_argument("--workdir", default=None, help="cache for scenes and the random model")
    ap.add_argument("--model", default=None, help="model id, checkpoint or directory")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--formats", default="netcdf,geotiff,shapefile,png")
    ap.add_argument("--json", default=None, help="also write results to this JSON file")
    ap.add_argument("--child", nargs=3, metavar=("SCENE", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.device, args.formats)))
        return
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "icechart-bench")
    workdir.mkdir(parents=True, exist_ok=True)
    model = args.model or str(_model(workdir))
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        scene = _scene(workdir, size)
        out = workdir / f"out{size}"
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(scene), model, str(out), "--device", args.device, "--formats", args.formats],
            check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        inference = r.get("features", 0) + r.get("forward", 0) + r.get("upsample", 0)
        r["inference_s"] = inference
        r["netcdf_product_s"] = r.get("read", 0) + inference + r.get("netcdf", 0)
        r["all_products_s"] = r.get("total", 0)
        results[size] = r
        print(f"\n{size} x {size} ({args.device}, {os.cpu_count()} CPUs)")
        for k, v in r.items():
            target = TARGETS.get(k)
            mark = "" if target is None else ("  ok (< %g)" % target if v < target else "  MISSED (target < %g)" % target)
            print(f"  {k:18s} {v:8.2f}{' GiB' if k.endswith('gib') else ' s'}{mark}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
