"""Benchmark: ensembles and calibrated confidence on synthetic scenes (issue 9).

Usage::

    python benchmarks/ensemble_eval.py                        # everything, ~5-10 min on 2 cores
    python benchmarks/ensemble_eval.py --json ens.json --workdir /tmp/ens
    python benchmarks/ensemble_eval.py --skip-timing          # no 5000 x 5000 scene

Steps:

1. Synthetic data (:mod:`icechart.synth`): training scenes (seed ``--seed``; the validation
   scenes are drawn from them) and held-out test scenes from a seed and dates never used in
   training.
2. ``icechart train --config quick-cpu --runs 3`` (fewer steps): three members, each
   calibrated on the validation scenes at the end of its run, and ``ensemble.toml`` with the
   ensemble's temperatures fitted on the averaged probabilities of the same scenes.
3. On the test scenes, at full label resolution with the AutoICE scorer: each member, the
   ensemble, and both with test-time augmentation (flips); expected calibration error (15 bins,
   top-class confidence, from the uint8-percent confidence the products carry) before and after
   temperature scaling; SIC absolute error by binned SIC standard error and SOD accuracy by
   binned confidence for the ensemble.
4. Time cost: ``process_scene`` (read, features, forward passes, upsampling, netCDF) of a
   5000 x 5000 scene with 1, 3 and 5 members. Members 4 and 5 are random-weight networks with
   the trained members' input contract and architecture (the cost does not depend on weights).

Prints the tables, then one JSON document (also written with ``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from icechart.calibration import ReliabilityAccumulator  # noqa: E402
from icechart.classes import CHARTS, FILL  # noqa: E402
from icechart.score import ScoreAccumulator  # noqa: E402

SE_BINS = (0, 1, 2, 4, 8, 16, 101)
"""SIC standard error bins (percent)."""
CONF_BINS = (0, 40, 50, 60, 70, 80, 90, 95, 101)
"""SOD confidence bins (percent)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# data and training
# ---------------------------------------------------------------------------------------------
def make_data(work: Path, args: argparse.Namespace) -> tuple[Path, list[Path]]:
    from icechart.synth import write_scenes

    train = work / "train-scenes"
    test = work / "test-scenes"
    size = (args.size, args.size)
    if not sorted(train.glob("*.nc")):
        log(f"writing {args.train_scenes} training scenes {args.size}x{args.size} (seed {args.seed}) ...")
        write_scenes(train, n=args.train_scenes, size=size, seed=args.seed)
    if not sorted(test.glob("*.nc")):
        log(f"writing {args.test_scenes} held-out scenes (seed {args.test_seed}, other dates) ...")
        write_scenes(test, n=args.test_scenes, size=size, seed=args.test_seed,
                     date=datetime(2022, 1, 10, tzinfo=timezone.utc))  # fmt: skip
    return train, sorted(test.glob("*.nc"))


def train_ensemble(work: Path, data: Path, args: argparse.Namespace) -> tuple[Path, float]:
    from icechart.train import load_train_config, train_runs

    out = work / "ens"
    if (out / "ensemble.toml").is_file() and args.reuse:
        return out, 0.0
    cfg = load_train_config(
        "quick-cpu",
        overrides=[f"epochs={args.epochs}", f"iterations={args.iterations}", f"restart_epochs={args.epochs}",
                   f"n_val={args.n_val}", "log_every=1000"],
        data=str(data), out=str(out), runs=args.runs, seed=args.seed, device=args.device,
    )  # fmt: skip
    t0 = time.perf_counter()
    train_runs(cfg, progress=False)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
class Collector:
    """Labelled full-resolution pixels (every ``step``-th line) for the uncertainty tables."""

    def __init__(self, step: int = 2) -> None:
        self.step = step
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in ("sic_ref", "sic", "se", "sod_ref", "sod", "sod_conf")}

    def add(self, scene: Any, b: Any) -> None:
        rows = slice(b.rows.start, b.rows.stop)
        sic_ref = scene.labels("SIC", (rows, slice(None)))[:: self.step]
        sod_ref = scene.labels("SOD", (rows, slice(None)))[:: self.step]
        sic, sod = b.charts["SIC"][:: self.step], b.charts["SOD"][:: self.step]
        use = (sic_ref != FILL) & (sic != FILL)
        self.parts["sic_ref"].append(sic_ref[use])
        self.parts["sic"].append(sic[use])
        self.parts["se"].append(b.sic_se[:: self.step][use] if b.sic_se is not None else np.zeros(use.sum(), np.uint8))
        use = (sod_ref != FILL) & (sod != FILL)
        self.parts["sod_ref"].append(sod_ref[use])
        self.parts["sod"].append(sod[use])
        self.parts["sod_conf"].append(b.confidence["SOD"][:: self.step][use])

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.zeros(0, np.uint8) for k, v in self.parts.items()}


def evaluate(model: Any, paths: list[Path], *, tta: bool = False, collect: Collector | None = None) -> dict[str, Any]:
    """Scores (calibrated prediction) and ECE with and without the model's temperatures."""
    from icechart.infer.predict import predict_scene
    from icechart.io.scene import open_scene

    acc = ScoreAccumulator()
    rel = {c: {"raw": ReliabilityAccumulator(), "cal": ReliabilityAccumulator()} for c in ("SOD", "FLOE")}
    seconds = 0.0
    for p in paths:
        with open_scene(p) as scene:
            t0 = time.perf_counter()
            pred = predict_scene(scene, model, tta=tta, tile_size=None)
            seconds += time.perf_counter() - t0
            raw = None
            if pred.temperature:  # the same networks without temperatures: only probabilities differ
                raw = type(pred)(**{**pred.__dict__, "probs": _untempered(pred), "temperature": {}})
            for b, b0 in zip(pred.blocks(scene), raw.blocks(scene) if raw is not None else pred.blocks(scene)):
                for chart in CHARTS:
                    ref = scene.labels(chart, (b.rows, slice(None)))
                    acc.update(chart, ref, b.charts[chart], scene_id=scene.scene_id)
                    if chart in rel:
                        rel[chart]["cal"].update_percent(ref, b.charts[chart], b.confidence[chart])
                        rel[chart]["raw"].update_percent(ref, b0.charts[chart], b0.confidence[chart])
                if collect is not None:
                    collect.add(scene, b)
    res = acc.result().to_dict()
    return {
        "scores": {k: res[k] for k in ("SIC", "SOD", "FLOE", "combined")},
        "ece_raw": {c: r["raw"].ece() for c, r in rel.items()},
        "ece_cal": {c: r["cal"].ece() for c, r in rel.items()},
        "predict_seconds": round(seconds, 3),
    }


def _untempered(pred: Any) -> dict[str, np.ndarray]:
    """Undo the temperature: p**T renormalised (exact inverse of p**(1/T))."""
    from icechart.calibration import apply_temperature

    return {c: (apply_temperature(p, 1.0 / pred.temperature[c]) if c in pred.temperature else p) for c, p in pred.probs.items()}


def binned(values: np.ndarray, target: np.ndarray, edges: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (values >= lo) & (values < hi)
        n = int(sel.sum())
        rows.append({"lo": lo, "hi": min(hi, 100), "n": n, "mean": float(target[sel].mean()) if n else None})
    return rows


def monotone(rows: list[dict[str, Any]], increasing: bool, min_n: int = 200) -> bool:
    vals = [r["mean"] for r in rows if r["n"] >= min_n]
    pairs = list(zip(vals[:-1], vals[1:]))
    return all((b >= a) if increasing else (b <= a) for a, b in pairs)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
def big_scene(work: Path, size: int) -> Path:
    d = work / f"scene{size}"
    found = sorted(d.glob("*_prep.nc"))
    if found:
        return found[0]
    d.mkdir(parents=True, exist_ok=True)
    log(f"making a {size}x{size} synthetic scene ...")
    subprocess.run([sys.executable, "-m", "icechart", "-q", "synth", str(d), "--scenes", "1", "--size",
                    f"{size}x{size}", "--seed", "5"], check=True)  # fmt: skip
    return sorted(d.glob("*_prep.nc"))[0]


def timing(work: Path, ens_dir: Path, counts: list[int], size: int, device: str) -> list[dict[str, Any]]:
    import torch

    from icechart.model.load import load_model
    from icechart.pipeline.predict import process_scene
    from icechart.model.checkpoint import load_checkpoint, save_checkpoint
    from icechart.model.ensemble import read_manifest, write_manifest
    from icechart.model.unet import build_net

    scene = big_scene(work, size)
    doc = read_manifest(ens_dir / "ensemble.toml")
    members = [str((ens_dir / m).resolve()) for m in doc["ensemble"]["members"]]
    first = load_checkpoint(members[0])
    k = 0
    while len(members) < max(counts):
        k += 1
        extra = work / f"random-member-{k}.safetensors"
        if not extra.exists():
            torch.manual_seed(1000 + k)
            save_checkpoint(extra, build_net(first.meta["arch"]), {kk: v for kk, v in first.meta.items() if kk != "calibration"})
        members.append(str(extra))
    rows = []
    for n in counts:
        if n == 1:
            spec: str = members[0]
        else:
            spec = str(write_manifest(work / f"timing-ens{n}.toml", members[:n], calibration=doc.get("calibration")))
        model = load_model(spec, device=device)
        out = work / f"timing-out-{n}"
        out.mkdir(exist_ok=True)
        for f in out.iterdir():
            f.unlink()
        tm: dict[str, float] = {}
        t0 = time.perf_counter()
        process_scene(scene, model, out, formats="netcdf", timings=tm)
        wall = time.perf_counter() - t0
        row = {"members": n, "wall_s": round(wall, 2)}
        row.update({k: round(v, 2) for k, v in tm.items() if isinstance(v, float) and k in
                    ("read", "features", "forward", "upsample", "netcdf")})  # fmt: skip
        rows.append(row)
        log(f"timing: {n} member(s): {row}")
    return rows


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def fmt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/icechart-ensemble-eval")
    ap.add_argument("--json", dest="json_out", default=None)
    ap.add_argument("--size", type=int, default=600, help="side of the synthetic training/test scenes")
    ap.add_argument("--train-scenes", type=int, default=14)
    ap.add_argument("--n-val", type=int, default=4)
    ap.add_argument("--test-scenes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--test-seed", type=int, default=77)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timing-size", type=int, default=5000)
    ap.add_argument("--timing-members", default="1,3,5")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse a trained ensemble in --workdir")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from icechart.model.load import load_model
    from icechart.model.ensemble import read_manifest

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data, test = make_data(work, args)
    ens_dir, train_s = train_ensemble(work, data, args)
    log(f"trained {args.runs} members in {train_s:.0f} s")
    manifest = read_manifest(ens_dir / "ensemble.toml")
    names = manifest["ensemble"]["members"]

    results: dict[str, Any] = {"rows": {}}
    for k, name in enumerate(names):
        m = load_model(str(ens_dir / name), device=args.device)
        results["rows"][f"member {k + 1}"] = evaluate(m, test)
        results["rows"][f"member {k + 1} + TTA"] = evaluate(m, test, tta=True)
    ens = load_model(str(ens_dir), device=args.device)
    coll = Collector()
    results["rows"]["ensemble"] = evaluate(ens, test, collect=coll)
    results["rows"]["ensemble + TTA"] = evaluate(ens, test, tta=True)
    arr = coll.arrays()
    sic_err = np.abs(arr["sic"].astype(np.int16) - arr["sic_ref"].astype(np.int16)) * 10.0
    se_rows = binned(arr["se"], sic_err, SE_BINS)
    conf_rows = binned(arr["sod_conf"], (arr["sod"] == arr["sod_ref"]).astype(np.float64), CONF_BINS)

    # --- tables ---------------------------------------------------------------------------
    print(f"\nHeld-out synthetic scenes: {len(test)} x {args.size}x{args.size} (seed {args.test_seed}); "
          f"members trained with quick-cpu, {args.epochs} x {args.iterations} steps, seeds {manifest['ensemble'].get('seeds')}")  # fmt: skip
    print("\nTable 1. AutoICE scores (%) on held-out scenes, full label resolution")
    print(f"{'model':<18}{'SIC':>8}{'SOD':>8}{'FLOE':>8}{'combined':>10}")
    for name, r in results["rows"].items():
        s = r["scores"]
        print(f"{name:<18}{s['SIC']:8.2f}{s['SOD']:8.2f}{s['FLOE']:8.2f}{s['combined']:10.2f}")
    singles = [r["scores"]["combined"] for n, r in results["rows"].items() if n.startswith("member") and "TTA" not in n]
    print(f"{'member mean':<18}{'':24}{np.mean(singles):10.2f}")

    cal = manifest.get("calibration") or {}
    print("\nTable 2. Expected calibration error (%, 15 bins, top-class confidence) on held-out scenes")
    print(f"{'model':<18}{'T SOD':>7}{'T FLOE':>7}{'SOD raw':>9}{'SOD cal':>9}{'FLOE raw':>10}{'FLOE cal':>10}")
    for k, name in enumerate(names):
        from icechart.model.checkpoint import read_checkpoint

        t = (read_checkpoint(ens_dir / name)[1].get("calibration") or {}).get("temperature", {})
        r = results["rows"][f"member {k + 1}"]
        print(f"{'member ' + str(k + 1):<18}{fmt(t.get('SOD')):>7}{fmt(t.get('FLOE')):>7}"
              f"{100 * r['ece_raw']['SOD']:9.2f}{100 * r['ece_cal']['SOD']:9.2f}"
              f"{100 * r['ece_raw']['FLOE']:10.2f}{100 * r['ece_cal']['FLOE']:10.2f}")  # fmt: skip
    t = cal.get("temperature", {})
    r = results["rows"]["ensemble"]
    print(f"{'ensemble':<18}{fmt(t.get('SOD')):>7}{fmt(t.get('FLOE')):>7}"
          f"{100 * r['ece_raw']['SOD']:9.2f}{100 * r['ece_cal']['SOD']:9.2f}"
          f"{100 * r['ece_raw']['FLOE']:10.2f}{100 * r['ece_cal']['FLOE']:10.2f}")  # fmt: skip
    if cal:
        print(f"(ensemble fit on validation scenes {cal.get('fitted_on')}: NLL SOD {cal['nll_before']['SOD']:.4f} -> "
              f"{cal['nll_after']['SOD']:.4f}, FLOE {cal['nll_before']['FLOE']:.4f} -> {cal['nll_after']['FLOE']:.4f})")  # fmt: skip

    print("\nTable 3. Ensemble: SIC absolute error by SIC standard error (held-out, every 2nd line)")
    print(f"{'SE bin (%)':<14}{'pixels':>10}{'mean |error| (%)':>18}")
    for row in se_rows:
        print(f"{str(row['lo']) + '-' + str(row['hi']):<14}{row['n']:>10}{fmt(row['mean']):>18}")
    print(f"increasing: {monotone(se_rows, True)}")
    print("\nTable 4. Ensemble: SOD accuracy by calibrated SOD confidence")
    print(f"{'conf bin (%)':<14}{'pixels':>10}{'accuracy (%)':>14}")
    for row in conf_rows:
        print(f"{str(row['lo']) + '-' + str(row['hi']):<14}{row['n']:>10}{fmt(None if row['mean'] is None else 100 * row['mean']):>14}")
    print(f"increasing: {monotone(conf_rows, True)}")

    out: dict[str, Any] = {
        "config": vars(args),
        "train_seconds": round(train_s, 1),
        "test_scenes": [p.name for p in test],
        "results": results["rows"],
        "ensemble_calibration": cal,
        "sic_error_by_se": se_rows,
        "sod_accuracy_by_confidence": conf_rows,
    }
    if not args.skip_timing:
        counts = [int(c) for c in args.timing_members.split(",")]
        rows = timing(work, ens_dir, counts, args.timing_size, args.device)
        print(f"\nTable 5. process_scene of a {args.timing_size}x{args.timing_size} scene (netCDF product), seconds, device {args.device}")
        print(f"{'members':>8}{'read':>7}{'features':>10}{'forward':>9}{'upsample':>10}{'netcdf':>8}{'total':>8}")
        for r in rows:
            print(f"{r['members']:>8}{r.get('read', 0):7.2f}{r.get('features', 0):10.2f}{r.get('forward', 0):9.2f}"
                  f"{r.get('upsample', 0):10.2f}{r.get('netcdf', 0):8.2f}{r['wall_s']:8.2f}")  # fmt: skip
        out["timing"] = rows
    out["total_seconds"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(out, indent=1, default=float)
    print("\n" + text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
