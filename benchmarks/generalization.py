"""Benchmark: do the input variants generalise to scenes nobody tuned to? (issue 12)

Usage::

    python benchmarks/generalization.py                          # all variants, ~25 min on 2 cores
    python benchmarks/generalization.py --variants mean,texture --workdir /tmp/gen --json gen.json

Steps:

1. Scenes from the physics generator (:mod:`icechart.synth`): ``--train-scenes`` labelled
   scenes (seed ``--seed``, DMI, March, wind and looks drawn per scene, incidence 19-47 deg)
   of which the trainer holds out ``--val`` for validation; then test sets of
   ``--test-scenes`` scenes each, all from a seed never used in training: ``unseen`` (same
   settings), and one shift each: ``location`` (81 N 20 E, north of Svalbard: more old ice,
   latitude outside the training range), ``month`` (July: melt), ``wind`` (16 m/s),
   ``incidence`` (20-30 deg: near range only, bright wind-roughened water) and ``service``
   (CIS: its area and larger polygons).
2. Each variant (:data:`VARIANTS`) is trained with ``icechart train --config quick-cpu`` (the
   quick recipe unchanged but for ``n_val``) in its own process: wall time and peak resident
   memory (``wait4``) are recorded.
3. Each model predicts every test set (``icechart predict --formats netcdf``) and is scored at
   full label resolution (``icechart score --json-file``): combined, SIC, SOD, FLOE and the expected
   calibration error of the SOD and FLOE confidence layers; plus the share of labelled pixels
   flagged out of distribution (status bit 8) where the model stores training ranges.
4. A trivial predictor (the training labels' mean SIC class and majority SOD and FLOE class
   everywhere) scored on the same sets.

Prints one table per variant, then one JSON document (also written with ``--json FILE``).
Each variant's result is also kept in ``WORKDIR/results/<variant>.json``; ``--report`` prints
the tables of every variant found there without training.
Timings are wall-clock on whatever else the machine is doing: say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from icechart.classes import CHARTS, FILL, N_CLASSES  # noqa: E402
from icechart.io import contract as C  # noqa: E402
from icechart.score import ScoreAccumulator  # noqa: E402

TEXTURE = list(C.DEFAULT_CHANNELS) + list(C.TEXTURE_CHANNELS)
VARIANTS: dict[str, list[str]] = {
    "mean": ['downscale_method="mean"', f"channels={json.dumps(list(C.DEFAULT_CHANNELS))}"],
    "subsample": ['downscale_method="subsample"', f"channels={json.dumps(list(C.DEFAULT_CHANNELS))}"],
    "texture": ['downscale_method="mean"', f"channels={json.dumps(TEXTURE)}"],
    "stem": ['downscale_method="mean"', f"channels={json.dumps(list(C.DEFAULT_CHANNELS))}", "stem=8"],
}
"""``--set`` overrides of the quick-cpu recipe per variant: block mean (the paper's default),
subsample (the reference code's), block mean plus the texture statistics channels, and block
mean plus the learned downscaling stem."""

SHIFTS: dict[str, list[str]] = {
    "unseen": [],
    "location": ["--center", "81,20"],
    "month": ["--date", "20210715"],
    "wind": ["--wind", "16"],
    "incidence": ["--incidence", "20,30"],
    "service": ["--service", "cis"],
}
"""``icechart synth`` options of each test set (all from the test seed)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def icechart(*args: str, quiet: bool = True) -> None:
    cmd = [sys.executable, "-m", "icechart", *(["-q"] if quiet else []), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; (wall seconds, CPU seconds, peak resident memory in GiB) of the child."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return secs, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20  # ru_maxrss: KiB on Linux


def make_data(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    size = f"{args.size}x{args.size}"
    train = work / "train"
    if not train.exists():
        log(f"writing {args.train_scenes} training scenes ({size})")
        icechart("synth", str(train), "--scenes", str(args.train_scenes), "--size", size, "--seed", str(args.seed))
    sets = {}
    for name, opts in SHIFTS.items():
        d = work / "test" / name
        if not d.exists():
            log(f"writing test set {name} {' '.join(opts)}")
            icechart("synth", str(d), "--scenes", str(args.test_scenes), "--size", size,
                     "--seed", str(args.test_seed), "--test", *opts)
        sets[name] = d
    return sets


def score_dir(labels: Path, pred: Path) -> dict[str, Any]:
    out = pred / "score.json"
    icechart("score", "--labels", str(labels / "reference"), str(pred), "--json-file", str(out))
    d = json.loads(out.read_text())
    row = {k: d[k] for k in ("combined", "SIC", "SOD", "FLOE")}
    cal = d.get("calibration") or {}
    row["ece_SOD"] = (cal.get("SOD") or {}).get("ece")
    row["ece_FLOE"] = (cal.get("FLOE") or {}).get("ece")
    row["ood_share"] = ood_share(labels, pred)
    return row


def ood_share(labels: Path, pred: Path) -> float | None:
    """Share of labelled pixels whose status_flag carries the out-of-distribution bit."""
    import xarray as xr

    try:
        from icechart.classes import STATUS_OOD
    except ImportError:
        return None
    n = hit = 0
    for f in sorted(pred.glob("*.nc")):
        with xr.open_dataset(f, mask_and_scale=False) as ds:
            if "status_flag" not in ds:
                continue
            st = ds["status_flag"].values
            sid = C.scene_id_from(ds.attrs.get("scene_id"), f.name)
        ref = next((labels / "reference").glob(f"{sid}_reference.nc"), None)
        if ref is None:
            continue
        with xr.open_dataset(ref, mask_and_scale=False) as r:
            lab = r["SIC"].values != FILL
        n += int(lab.sum())
        hit += int(((st & STATUS_OOD) != 0)[lab].sum())
    return hit / n if n else None


def trivial(train: Path, sets: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Scores of the constant predictor built from the training labels."""
    import xarray as xr

    hist = {c: np.zeros(N_CLASSES[c], np.int64) for c in CHARTS}
    for f in sorted(train.glob("*.nc")):
        with xr.open_dataset(f, mask_and_scale=False) as ds:
            for c in CHARTS:
                v = ds[c].values.ravel()
                hist[c] += np.bincount(v[v != FILL], minlength=N_CLASSES[c])[: N_CLASSES[c]]
    const = {
        "SIC": int(round(float((hist["SIC"] * np.arange(11)).sum() / hist["SIC"].sum()))),
        "SOD": int(np.argmax(hist["SOD"])),
        "FLOE": int(np.argmax(hist["FLOE"])),
    }
    rows = {}
    for name, d in sets.items():
        acc = ScoreAccumulator()
        for f in sorted((d / "reference").glob("*.nc")):
            with xr.open_dataset(f, mask_and_scale=False) as ds:
                for c in CHARTS:
                    ref = ds[c].values
                    acc.update(c, ref, np.full(ref.shape, const[c], np.uint8))
        res = acc.result().scores
        rows[name] = {k: res[k] for k in ("combined", "SIC", "SOD", "FLOE")} | {"ece_SOD": None, "ece_FLOE": None}
    return rows


def fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def table(name: str, rows: dict[str, dict[str, Any]], info: str = "") -> str:
    lines = [f"### {name}{info}", "",
             "| test set | combined | SIC | SOD | FLOE | ECE SOD | ECE FLOE | OOD share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s, r in rows.items():
        lines.append(
            f"| {s} | {fmt(r['combined'])} | {fmt(r['SIC'])} | {fmt(r['SOD'])} | {fmt(r['FLOE'])} | "
            f"{fmt(r.get('ece_SOD'), '.3f')} | {fmt(r.get('ece_FLOE'), '.3f')} | {fmt(r.get('ood_share'), '.3f')} |"
        )
    return "\n".join(lines)


def _info(r: dict[str, Any]) -> str:
    return (f" (train {r['train_seconds']:.0f} s wall, {r.get('train_cpu_seconds', 0):.0f} s CPU, peak "
            f"{r['train_peak_gib']:.2f} GiB; validation combined "
            f"{fmt((r.get('val') or {}).get('combined'))})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/icechart-generalization")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--train-scenes", type=int, default=10)
    ap.add_argument("--val", type=int, default=2, help="of the training scenes, held out for validation")
    ap.add_argument("--test-scenes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=41)
    ap.add_argument("--test-seed", type=int, default=51)
    ap.add_argument("--train-seed", type=int, default=1)
    ap.add_argument("--config", default="quick-cpu")
    ap.add_argument("--set", action="append", default=[], help="extra --set for every variant")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--report", action="store_true", help="only print the results in WORKDIR/results")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "results").mkdir(exist_ok=True)
    sets = make_data(work, args)
    results: dict[str, Any] = {"settings": vars(args), "variants": {}}
    results["trivial"] = trivial(work / "train", sets)
    print(table("trivial predictor", results["trivial"]), flush=True)
    if args.report:
        for v in VARIANTS:
            f = work / "results" / f"{v}.json"
            if f.exists():
                r = results["variants"][v] = json.loads(f.read_text())
                print(table(v, r["tests"], _info(r)), flush=True)
        text = json.dumps(results, indent=1)
        if args.json_out:
            Path(args.json_out).write_text(text + "\n")
        print(text)
        return
    for v in args.variants.split(","):
        run = work / "runs" / v
        sets_ = [x for s in [*VARIANTS[v], f"n_val={args.val}", *args.set] for x in ("--set", s)]
        log(f"training {v}")
        cmd = [sys.executable, "-m", "icechart", "-q", "train", "--config", args.config,
               "--data", str(work / "train"), "-o", str(run), "--seed", str(args.train_seed),
               "--overwrite", *sets_]
        secs, cpu, rss = timed(cmd)
        summary = json.loads((run / "summary.json").read_text())
        rows = {}
        for name, d in sets.items():
            pred = work / "pred" / v / name
            icechart("predict", str(d), "-o", str(pred), "--model", str(run), "--formats", "netcdf", "--overwrite")
            rows[name] = score_dir(d, pred)
        r = results["variants"][v] = {"train_seconds": round(secs, 1), "train_cpu_seconds": round(cpu, 1),
                                      "train_peak_gib": round(rss, 2),
                                      "val": summary.get("scores"), "tests": rows}
        (work / "results" / f"{v}.json").write_text(json.dumps(r, indent=1) + "\n")
        print(table(v, rows, _info(r)), flush=True)
    text = json.dumps(results, indent=1)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
