"""The hostile-input cases of issue 16 through the real command line, one line each: exit code,
the error line, and whether anything appeared outside OUT.

Run it against any checkout (``--tree``, put first on PYTHONPATH) to compare codes before and
after a change; each command has a time limit (a hang shows as ``timeout``).

    python benchmarks/hostile_cases.py --tree .
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=".", help="checkout whose icechart to run")
    ap.add_argument("--work", default=None)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--only", default="", help="comma list of case names")
    args = ap.parse_args()
    tree = Path(args.tree).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="icechart-hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    py = sys.executable
    sys.path.insert(0, str(tree))
    from icechart.synth import make_scene, write_scene
    from icechart.testing import random_checkpoint

    base = make_scene((120, 110), seed=11)
    model = work / "m.safetensors"
    if not model.exists():
        random_checkpoint(model)

    def scene(case: Path, edit: Callable | None = None, name: str | None = None) -> Path:
        ds = base.copy(deep=True)
        if edit is not None:
            edit(ds)
        p = case / "in" / (name or str(base.attrs["scene_id"]))
        p.parent.mkdir(parents=True, exist_ok=True)
        if name:
            ds.attrs["scene_id"] = name
        write_scene(ds, p)
        return p

    def shift(var: str, fn: Callable) -> Callable:
        def edit(ds) -> None:  # type: ignore[no-untyped-def]
            ds[var] = ds[var].copy(data=fn(ds[var].values))

        return edit

    def run(case: Path, *argv: str, cwd: Path | None = None) -> tuple[str, str]:
        try:
            p = subprocess.run([py, "-m", "icechart", *argv], capture_output=True, text=True, env=env,
                               timeout=args.timeout, cwd=cwd or case)  # fmt: skip
        except subprocess.TimeoutExpired:
            return "timeout", ""
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        err = next((ln for ln in lines if ln.startswith("icechart: error:")),
                   next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else ""))
        rc = p.returncode if p.returncode >= 0 else f"signal {-p.returncode}"
        extra = f" ({len(lines)} stderr lines)" if len(lines) > 3 else ""
        return str(rc), err.removeprefix("icechart: error: ")[:160] + extra

    def predict(case: Path, sc: Path, *extra: str, m: Path | str = model) -> tuple[str, str]:
        return run(case, "predict", str(sc), "-o", str(case / "work" / "out"), "--model", str(m), "--device", "cpu", *extra)

    def edited_model(case: Path, **meta: object) -> Path:
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(model), framework="pt") as fh:
            header = dict(fh.metadata())
            state = {k: fh.get_tensor(k).clone() for k in fh.keys()}
        m = json.loads(header["icechart"])
        if meta.pop("nan", False):
            import torch

            k = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
            state[k].view(-1)[0] = torch.nan
            header.pop("icechart.weights_sha256", None)
        m.update(meta)
        header["icechart"] = json.dumps(m)
        p = case / "bad.safetensors"
        save_file(state, str(p), metadata=header)
        return p

    def card(case: Path, text: str) -> Path:
        d = case / "models" / "mymodel"
        d.mkdir(parents=True)
        shutil.copyfile(model, d / "model.safetensors")
        (d / "model.toml").write_text(text)
        return d

    cases: dict[str, Callable[[Path], tuple[str, str]]] = {}

    def case(name: str):  # type: ignore[no-untyped-def]
        def deco(fn):  # type: ignore[no-untyped-def]
            cases[name] = fn
            return fn

        return deco

    @case("model id x/../../ESCAPED")
    def _(c: Path) -> tuple[str, str]:
        sc = scene(c)
        (c / "work" / "out" / f"{base.attrs['scene_id'][:19]}_x").mkdir(parents=True)
        return predict(c, sc, "--formats", "netcdf,png", m=card(c, '[model]\nid = "x/../../ESCAPED"\n'))

    @case("model id with a newline")
    def _(c: Path) -> tuple[str, str]:
        return predict(c, scene(c), "--formats", "netcdf", m=card(c, '[model]\nid = "a\\nb"\n'))

    @case("model card weights ../../x")
    def _(c: Path) -> tuple[str, str]:
        shutil.copyfile(model, c / "x.safetensors")
        return predict(c, scene(c), "--formats", "netcdf", m=card(c, '[model]\nweights = "../../x.safetensors"\n'))

    @case("model card `model = \"notatable\"`")
    def _(c: Path) -> tuple[str, str]:
        return predict(c, scene(c), "--formats", "netcdf", m=card(c, 'model = "notatable"\n'))

    for label, var, fn in (
        ("tie lat +40", "sar_grid2d_latitude", lambda a: a + 40),
        ("tie lon +1000", "sar_grid2d_longitude", lambda a: a + 1000),
        ("tie lat x1e12", "sar_grid2d_latitude", lambda a: a * 1e12),
        ("tie lat NaN", "sar_grid2d_latitude", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a)),
        ("tie points identical", "sar_grid2d_latitude", lambda a: np.full_like(a, 75.0)),
    ):
        def make(var: str = var, fn: Callable = fn) -> Callable[[Path], tuple[str, str]]:
            def f(c: Path) -> tuple[str, str]:
                sc = scene(c, shift(var, fn))
                rc, _ = run(c, "info", str(sc))
                prc, msg = predict(c, sc, "--formats", "netcdf,geotiff")
                return f"info {rc} / predict {prc}", msg

            return f

        cases[label] = make()

    @case("declared 200000 x 200000 (info)")
    def _(c: Path) -> tuple[str, str]:
        import netCDF4

        p = c / "20200101T000000_dmi_prep.nc"
        with netCDF4.Dataset(p, "w") as nc:
            for d, n in (("sar_lines", 200_000), ("sar_samples", 200_000), ("sar_line_2dgrid_points", 2),
                         ("sar_sample_2dgrid_points", 2)):
                nc.createDimension(d, n)
            for v in ("nersc_sar_primary", "nersc_sar_secondary"):
                nc.createVariable(v, "f4", ("sar_lines", "sar_samples"), zlib=True, chunksizes=(256, 256))
            for v, val in (("sar_grid2d_latitude", [[70, 70], [73, 73]]), ("sar_grid2d_longitude", [[-60, -50], [-60, -50]])):
                nc.createVariable(v, "f8", ("sar_line_2dgrid_points", "sar_sample_2dgrid_points"))[:] = np.array(val, float)
        return run(c, "info", str(p))

    for label, meta in (("checkpoint factor 0", {"factor": 0}), ("checkpoint factor 100000", {"factor": 100000}),
                        ("checkpoint unknown channel", {"channels": ["nersc_sar_primary", "bogus"]}),
                        ("checkpoint norm garbage", {"norm": "garbage"}), ("checkpoint NaN weights", {"nan": True})):
        cases[label] = (lambda meta: lambda c: predict(c, scene(c), "--formats", "netcdf", m=edited_model(c, **meta)))(meta)

    for label, toml in (("config lock = 5", "lock = 5"), ("config formats = 5", "formats = 5"),
                        ("config resolution = nan", "resolution = nan")):
        def cfg(c: Path, toml: str = toml) -> tuple[str, str]:
            (c / "i.toml").write_text(f"[predict]\n{toml}\n")
            rc, msg = run(c, "--config", str(c / "i.toml"), "predict", str(scene(c)), "-o", str(c / "work" / "out"),
                          "--model", str(model), "--device", "cpu", "--formats", "netcdf")  # fmt: skip
            return rc + (" (created ./5)" if (c / "5").exists() else ""), msg

        cases[label] = cfg

    cases["--resolution inf"] = lambda c: predict(c, scene(c), "--resolution", "inf")
    cases["--sieve 1000000000"] = lambda c: predict(c, scene(c), "--sieve", "1000000000")

    @case("FIFO as input")
    def _(c: Path) -> tuple[str, str]:
        (c / "in").mkdir(parents=True)
        f = c / "in" / "20200101T000000_dmi_prep.nc"
        os.mkfifo(f)
        return predict(c, f)

    @case("symlink loop as input")
    def _(c: Path) -> tuple[str, str]:
        f = c / "20200101T000000_dmi_prep.nc"
        os.symlink(f.name, f)
        return predict(c, f)

    @case("bad date in scene id")
    def _(c: Path) -> tuple[str, str]:
        return run(c, "info", str(scene(c, name="20211399T256199_dmi_prep.nc")))

    @case("non-numeric fill attribute")
    def _(c: Path) -> tuple[str, str]:
        def edit(ds) -> None:  # type: ignore[no-untyped-def]
            ds["nersc_sar_primary"].attrs["variable_fill_value"] = "minus nine"

        return run(c, "info", str(scene(c, edit)))

    def rerun_case(mutate: Callable[[Path], None], *extra: str) -> Callable[[Path], tuple[str, str]]:
        def f(c: Path) -> tuple[str, str]:
            sc = scene(c)
            first, msg = predict(c, sc, "--formats", "netcdf,png")
            if first != "0":
                return f"first run {first}", msg
            mutate(c / "work" / "out")
            return predict(c, sc, "--formats", "netcdf,png", *extra)

        return f

    def delete_png(out: Path) -> None:
        next(out.glob("*_SIC.png")).unlink()

    def corrupt_png(out: Path) -> None:
        p = next(out.glob("*_SIC.png"))
        st = p.stat()
        p.write_bytes(bytes(b ^ 0xFF for b in p.read_bytes()))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))

    def garble_manifest(out: Path) -> None:
        m = next(out.glob("*.manifest.json"))
        d = json.loads(m.read_text())
        d["files"], d["model"] = 5, "x"
        m.write_text(json.dumps(d))

    cases["rerun after a product was deleted"] = rerun_case(delete_png)
    cases["rerun --verify after same-size corruption"] = rerun_case(corrupt_png, "--verify")
    cases["rerun with a manifest of wrong field types"] = rerun_case(garble_manifest)

    @case("score a product without SIC units")
    def _(c: Path) -> tuple[str, str]:
        import netCDF4

        sc = scene(c)
        rc, msg = predict(c, sc, "--formats", "netcdf")
        if rc != "0":
            return f"predict {rc}", msg
        nc = next((c / "work" / "out").glob("*.nc"))
        with netCDF4.Dataset(nc, "a") as ds:
            ds.variables["SIC"].delncattr("units")
        return run(c, "score", "--labels", str(sc), str(nc))

    @case("pickled .pt checkpoint")
    def _(c: Path) -> tuple[str, str]:
        import pickle

        import torch

        class Payload:
            def __reduce__(self):  # type: ignore[no-untyped-def]
                return (os.system, (f"touch {c / 'RAN'}",))

        torch.save({"model": Payload(), "meta": "{}"}, c / "evil.pt", pickle_module=pickle)
        rc, msg = predict(c, scene(c), m=c / "evil.pt")
        return rc + (" (payload RAN)" if (c / "RAN").exists() else ""), msg

    only = {s.strip() for s in args.only.split(",") if s.strip()}
    print(f"tree: {tree}")
    for k, (name, fn) in enumerate(cases.items()):
        if only and name not in only:
            continue
        c = work / f"case{k:02d}"
        shutil.rmtree(c, ignore_errors=True)
        c.mkdir(parents=True)
        before = {p for p in c.rglob("*")}
        rc, msg = fn(c)
        inputs = ("in", "models", "bad.", "x.", "evil", "i.toml", "2020")
        outside = sorted(
            rel for rel in (str(p.relative_to(c)) for p in set(c.rglob("*")) - before)
            if rel != "work" and not rel.startswith(("work/out", *inputs))
        )
        print(f"{name:45s} | {rc:22s} | {'outside OUT: ' + ', '.join(outside) if outside else '-':20s} | {msg}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
