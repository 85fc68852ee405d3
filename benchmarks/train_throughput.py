"""Training throughput: patches/s end to end, GPU utilisation and the data-wait share.

Runs the real training loop (``icechart.train.train``) with the Model 1 network (16 channels,
filters [32, 32, 64, 64]) at the paper's batch (16 x 256 x 256), AMP and channels-last on CUDA,
on synthetic scenes, twice: once from an empty preprocessing cache (start-up = reading and
downscaling every scene), once reusing it. The second run's first epoch is a warm-up; the
figures are the mean over the later epochs:

* ``patches_per_s``: patches per second end to end (sampling, transfer, augmentation,
  forward, backward, optimiser step), from ``metrics.jsonl``;
* ``data_wait``: the share of the step time the loop waited for the DataLoader;
* ``gpu_util``: the mean GPU utilisation sampled every 0.2 s during the timed epochs
  (``torch.cuda.utilization()`` when pynvml is there, else ``nvidia-smi``; CPU: none);
* ``batch_prep_s``: assembling one batch on the training thread (sampling + transfer +
  augmentation), for comparison with the step time.

``--validation LxS`` also times validation of one labelled scene of that size (the paper's
scenes are about 5000 x 5000) with the Model 1 network, seconds per scene: ``forward`` (the
network on the downscaled scene), ``device`` (:func:`icechart.training.validate.validate`:
forward, the decision and the pair counts on the training device) and, on CUDA, ``host`` (the
outputs copied to the host, decided and counted there: what validation cost before it ran on
the device). ``--validation-only`` skips the training runs.

Target on one H200 (issue 14): at least 2 x 190 patches/s (the paper: 300 x 500 x 16 patches in
3.5 h on an A100) with the data wait under 10 %. Prints a table and a JSON line. Usage::

    python benchmarks/train_throughput.py --device cpu --scenes 3 --size 2600x2600 --iterations 3
    python benchmarks/train_throughput.py --device cuda --scenes 8 --size 5000x5000 --iterations 200
    python benchmarks/train_throughput.py --device cpu --validation 5000x5000 --validation-only
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icechart.synth import write_scenes
from icechart.train import TrainConfig, train
from icechart.training.augment import AugmentSpec, augment_batch
from icechart.training.data import PatchSampler, load_all

logger = logging.getLogger(__name__)


def gpu_utilisation() -> float | None:
    """Current utilisation (%) of the CUDA device, or None where it cannot be read."""
    if not torch.cuda.is_available():
        return None
    try:
        return float(torch.cuda.utilization())
    except Exception:  # pynvml missing: ask nvidia-smi
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i",
             str(torch.cuda.current_device())],
            capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
        return float(out.stdout.strip().splitlines()[0])
    except Exception:
        return None


class UtilisationSampler:
    """Samples :func:`gpu_utilisation` every ``period`` seconds on a thread while active."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.samples: list[float] = []
        self.active = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.active = gpu_utilisation() is not None
        if not self.active:
            return

        def loop() -> None:
            while not self._stop.is_set():
                v = gpu_utilisation()
                if v is not None:
                    self.samples.append(v)
                self._stop.wait(self.period)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return float(np.mean(self.samples)) if self.samples else None


def _cfg(data: Path, out: Path, device: str, *, iterations: int, epochs: int, cache: Path, workers: int,
         batch: int, patch: int, amp: bool, amp_dtype: str) -> TrainConfig:  # fmt: skip
    return TrainConfig(
        data=str(data), out=str(out), cache_dir=str(cache), n_val=0, epochs=epochs, iterations=iterations,
        batch_size=batch, patch_size=patch, factor=10, device=device, log_every=max(iterations, 1),
        workers=workers, amp=amp, amp_dtype=amp_dtype, calibrate=False,  # type: ignore[arg-type]
    )  # fmt: skip


def run(device: str, data: Path, work: Path, *, iterations: int, epochs: int, workers: int, batch: int,
        patch: int, amp: bool, amp_dtype: str = "float16") -> dict[str, Any]:  # fmt: skip
    cache = work / f"cache-{device}"
    shutil.rmtree(cache, ignore_errors=True)
    res: dict[str, Any] = {"device": device, "workers": workers, "amp": amp and device == "cuda", "amp_dtype": amp_dtype}
    kw = dict(iterations=iterations, cache=cache, workers=workers, batch=batch, patch=patch, amp=amp, amp_dtype=amp_dtype)
    # 1. cold cache: start-up time
    out = work / f"run-{device}-cold"
    shutil.rmtree(out, ignore_errors=True)
    train(_cfg(data, out, device, epochs=1, **kw), progress=False)  # type: ignore[arg-type]
    res["startup_s_no_cache"] = json.loads((out / "summary.json").read_text())["data_seconds"]
    # 2. warm cache: throughput over epochs 2.. (epoch 1 warms up workers, cuDNN, the allocator)
    out = work / f"run-{device}-warm"
    shutil.rmtree(out, ignore_errors=True)
    util = UtilisationSampler()
    util.start()
    r = train(_cfg(data, out, device, epochs=epochs, **kw), progress=False)  # type: ignore[arg-type]
    res["gpu_util"] = util.stop()
    summ = json.loads((out / "summary.json").read_text())
    res["startup_s_cache"] = summ["data_seconds"]
    timed = r.metrics[1:] if len(r.metrics) > 1 else r.metrics
    res["patches_per_s"] = float(np.mean([m["patches_per_s"] for m in timed]))
    res["data_wait"] = float(np.mean([m.get("data_wait_share", float("nan")) for m in timed]))
    res["epochs_timed"] = len(timed)
    # 3. one batch assembled on the training thread
    cfg = _cfg(data, work / "prep", device, epochs=1, **kw)  # type: ignore[arg-type]
    scenes = load_all(sorted(data.glob("*.nc")), cfg, cache)
    dev = torch.device(device)
    sampler = PatchSampler(scenes, patch=patch, min_labelled=0.01, seed=0)
    gen = torch.Generator().manual_seed(0)
    times = []
    for k in range(5):
        t0 = time.perf_counter()
        xb, yb = sampler.batch(batch, index=k)
        x = torch.nan_to_num(torch.from_numpy(xb).to(dev))
        y = torch.from_numpy(yb).to(dev)
        augment_batch(x, y, AugmentSpec(), gen)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    res["batch_prep_s"] = float(np.median(times))
    return res


def validation_seconds(device: str, work: Path, size: tuple[int, int], *, amp: bool, repeat: int = 2) -> dict[str, Any]:
    """Seconds per validation scene of ``size`` (best of ``repeat``): forward, all on the device,
    and (CUDA) decided and counted on the host."""
    from icechart.features import norm_from_stacks
    from icechart.model.unet import build_net
    from icechart.score import ScoreAccumulator
    from icechart.training.validate import predict_scene_outputs, score_outputs, validate

    data = work / f"val-scene-{size[0]}x{size[1]}"
    if not list(data.glob("*.nc")):
        write_scenes(data, n=1, size=size, seed=13, overwrite=True)
    cfg = TrainConfig(data=str(data), out=str(work / "val-run"), factor=10)
    scenes = load_all(sorted(data.glob("*.nc")), cfg, work / "cache-val", full_labels=True)
    norm = norm_from_stacks([np.asarray(sc.x) for sc in scenes], cfg.channels)
    dev = torch.device(device)
    torch.manual_seed(0)
    net = build_net({"in_channels": len(cfg.channels), "filters": [32, 32, 64, 64]}).to(dev).eval()
    use_amp = amp and dev.type == "cuda"
    kw: dict[str, Any] = dict(factor=cfg.factor, method=cfg.downscale_method, sic_mode="regression")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def best(fn: Any) -> float:
        times = []
        for _ in range(repeat + 1):  # the first is a warm-up
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    sc = scenes[0]
    assert sc.full_labels is not None
    labels = np.asarray(sc.full_labels)
    res: dict[str, Any] = {"device": device, "size": f"{size[0]}x{size[1]}", "amp": use_amp}
    res["forward_s"] = best(lambda: predict_scene_outputs(net, sc.x, norm, device=dev, amp=use_amp))
    res["device_s"] = best(lambda: validate(net, scenes, norm, device=dev, amp=use_amp, **kw))

    def on_host() -> None:
        out = predict_scene_outputs(net, sc.x, norm, device=dev, amp=use_amp)
        score_outputs(ScoreAccumulator(), {k: v.cpu() for k, v in out.items()}, labels, scene_id=sc.scene_id, **kw)

    res["host_s"] = best(on_host) if dev.type == "cuda" else res["device_s"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--size", default="2600x2600", help="synthetic scene size LINESxSAMPLES")
    ap.add_argument("--iterations", type=int, default=3, help="training iterations per epoch")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the warm run (the first is a warm-up)")
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1: auto)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--no-amp", action="store_true", help="CUDA: float32 instead of mixed precision")
    ap.add_argument("--amp-dtype", choices=["float16", "bfloat16"], default="float16")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--validation", default=None, metavar="LxS", help="also time validation of one scene of this size")
    ap.add_argument("--validation-only", action="store_true", help="with --validation: skip the training runs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="icechart-bench-"))
    data = work / "scenes"
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if not data.exists() or len(list(data.glob("*.nc"))) < args.scenes:
        write_scenes(data, n=args.scenes, size=size, seed=11, overwrite=True)  # type: ignore[arg-type]
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA device is available")
        devices.remove("cuda")
    if args.validation_only and not args.validation:
        raise SystemExit("--validation-only needs --validation LxS")
    rows = [] if args.validation_only else [
        run(d, data, work, iterations=args.iterations, epochs=args.epochs, workers=args.workers,
            batch=args.batch, patch=args.patch, amp=not args.no_amp, amp_dtype=args.amp_dtype)
        for d in devices]  # fmt: skip
    print(f"scenes: {args.scenes} x {args.size}; batch {args.batch}, patch {args.patch}, Model 1 net; "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    if rows:
        print(f"{'device':8} {'start-up (no cache)':>20} {'(cache)':>8} {'batch prep':>11} {'patches/s':>10} "
              f"{'data wait':>10} {'GPU util':>9}")  # fmt: skip
    for r in rows:
        util = "-" if r["gpu_util"] is None else f"{r['gpu_util']:.0f} %"
        print(f"{r['device']:8} {r['startup_s_no_cache']:19.2f}s {r['startup_s_cache']:7.2f}s "
              f"{r['batch_prep_s']:10.3f}s {r['patches_per_s']:10.2f} {100 * r['data_wait']:9.1f}% {util:>9}")  # fmt: skip
    val_rows = []
    if args.validation:
        vsize = tuple(int(v) for v in args.validation.lower().split("x"))
        val_rows = [validation_seconds(d, work, vsize, amp=not args.no_amp) for d in devices]  # type: ignore[arg-type]
        print(f"validation of one {args.validation} scene, s: {'device':8} {'forward':>8} {'on the device':>14} {'on the host':>12}")
        for v in val_rows:
            print(f"{'':38}{v['device']:8} {v['forward_s']:8.2f} {v['device_s']:14.2f} {v['host_s']:12.2f}")
    doc = {"scenes": args.scenes, "size": args.size, "iterations": args.iterations, "batch": args.batch,
           "patch": args.patch, "torch": torch.__version__, "results": rows, "validation": val_rows}  # fmt: skip
    print(json.dumps(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
