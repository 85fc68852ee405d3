"""Training start-up time and throughput (patches/s), with and without the preprocessing cache.

Runs the real training loop (``icechart.train.train``) with the Model 1 network (16 channels,
filters [32, 32, 64, 64]), batch 16, 256 x 256 patches, on synthetic scenes:

* start-up without the cache: the cache directory is empty, every scene is read at full
  resolution and downscaled (what the reference does at every start);
* start-up with the cache: the same run again, reusing the entries;
* batch preparation (patch sampling + normalisation + augmentation on the device) per batch;
* end-to-end training patches/s (sampling, augmentation, forward, backward, step).

Prints a table and a JSON line. Usage::

    python benchmarks/train_throughput.py --scenes 3 --size 2600x2600 --iterations 3
    python benchmarks/train_throughput.py --device cuda --iterations 50
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from icechart.synth import write_scenes
from icechart.train import TrainConfig, train
from icechart.training.augment import AugmentSpec, augment_batch
from icechart.training.data import PatchSampler, load_all

logger = logging.getLogger(__name__)


def _cfg(data: Path, out: Path, device: str, iterations: int, cache: Path) -> TrainConfig:
    return TrainConfig(
        data=str(data), out=str(out), cache_dir=str(cache), n_val=0, epochs=1, iterations=iterations,
        batch_size=16, patch_size=256, factor=10, device=device, log_every=max(iterations, 1),
    )


def run(device: str, data: Path, work: Path, iterations: int) -> dict[str, float | str]:
    cache = work / f"cache-{device}"
    shutil.rmtree(cache, ignore_errors=True)
    res: dict[str, float | str] = {"device": device}
    for label in ("no_cache", "cache"):
        out = work / f"run-{device}-{label}"
        cfg = _cfg(data, out, device, iterations, cache)
        r = train(cfg, progress=False)
        summ = json.loads((out / "summary.json").read_text())
        res[f"startup_s_{label}"] = summ["data_seconds"]
        res[f"patches_per_s_{label}"] = r.metrics[-1]["patches_per_s"]
    # batch preparation alone
    cfg = _cfg(data, work / "prep", device, iterations, cache)
    scenes = load_all(sorted(data.glob("*.nc")), cfg, cache)
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    sampler = PatchSampler(scenes, patch=256, min_labelled=0.01, seed=0)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        xb, yb = sampler.batch(16)
        x = torch.nan_to_num(torch.from_numpy(xb).to(dev))
        y = torch.from_numpy(yb).to(dev)
        x, y = augment_batch(x, y, AugmentSpec(), gen)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    res["batch_prep_s"] = float(np.median(times))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--size", default="2600x2600", help="synthetic scene size LINESxSAMPLES")
    ap.add_argument("--iterations", type=int, default=3, help="training iterations per measurement")
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="icechart-bench-"))
    data = work / "scenes"
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if not data.exists() or len(list(data.glob("*.nc"))) < args.scenes:
        write_scenes(data, n=args.scenes, size=size, seed=11, overwrite=True)  # type: ignore[arg-type]
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    rows = [run(d, data, work, args.iterations) for d in devices]
    print(f"scenes: {args.scenes} x {args.size}; batch 16, patch 256, Model 1 net; torch threads {torch.get_num_threads()}")
    print(f"{'device':8} {'start-up (no cache)':>20} {'start-up (cache)':>17} {'batch prep':>11} {'patches/s':>10}")
    for r in rows:
        print(f"{r['device']:8} {r['startup_s_no_cache']:19.2f}s {r['startup_s_cache']:16.2f}s "
              f"{r['batch_prep_s']:10.3f}s {r['patches_per_s_cache']:10.2f}")
    print(json.dumps({"scenes": args.scenes, "size": args.size, "iterations": args.iterations, "results": rows}))


if __name__ == "__main__":
    main()
