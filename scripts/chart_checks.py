"""Measure a scene's products the way an ice service's tools would check them.

    python scripts/chart_checks.py SCENE.nc OUTDIR [--model ID] [--real-charts DIR] [--json FILE]

Runs the shipped model on SCENE (CPU), writes every product into OUTDIR, and reports:

* the SIGRID-3 chart: polygon count, median polygon area (all polygons and ice polygons), next
  to the same figures of the real CIS/DMI/NIC charts in ``--real-charts``; the coverage check
  (:func:`icechart.products.sigrid3.check_coverage`: overlap area, union vs charted area, every
  polygon valid); the egg-code consistency (no CT > 0 with SA 00 or without a stage);
* the netCDF's own consistency (pixels with SIC > 0 and SOD or FLOE open water);
* the round trip: the chart rasterised back onto the scene (the scoring reader) and scored
  against the netCDF it was written with, and exactness in pure regions (polygons whose
  interior, 1.2 km inside the outline, is one class triple in the netCDF); ``--labels`` charts
  the scene's own labels instead of the model's output (regions of one triple, as an analyst's);
* ``rio_cogeo`` validation of every GeoTIFF and the IOOS compliance-checker (CF-1.10, ACDD-1.3)
  failures by priority.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np


def real_chart_figures(folder: Path) -> dict[str, dict[str, float]]:
    """Polygon count and median area (km², all / ice) of each real chart (equal-area EPSG:6931
    for the lon/lat ones, the chart's own projection otherwise)."""
    import fiona
    import shapely
    from pyproj import CRS, Transformer
    from shapely.geometry import shape

    out = {}
    for d in sorted(folder.glob("*/")):
        files = [f for f in glob.glob(str(d / "*")) if f.endswith((".shp", ".gpkg"))]
        if not files:
            continue
        with fiona.open(files[0]) as src:
            crs = CRS.from_wkt(src.crs_wkt)
            feats = [(shape(f.geometry), dict(f.properties)) for f in src if f.geometry]
        geoms = np.array([shapely.make_valid(g) for g, _ in feats], dtype=object)
        if crs.is_geographic:
            t = Transformer.from_crs(crs, "EPSG:6931", always_xy=True)
            geoms = shapely.transform(geoms, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
        area = shapely.area(geoms) / 1e6
        ice = np.array([p.get("POLY_TYPE") == "I" for _, p in feats])
        out[d.name] = {
            "polygons": int(area.size),
            "median_km2": float(np.median(area)),
            "ice_polygons": int(ice.sum()),
            "median_ice_km2": float(np.median(area[ice])) if ice.any() else float("nan"),
        }
    return out


def labels_prediction(scene, *, pred_for):  # type: ignore[no-untyped-def]
    """The scene's labels as a one-hot prediction at the model grid (as tests/test_sigrid3_roundtrip)."""
    import dataclasses

    from icechart.classes import FILL, N_CLASSES
    from icechart.features import downscale_labels

    low = {c: downscale_labels(scene, c, factor=pred_for.factor) for c in ("SIC", "SOD", "FLOE")}
    low = {c: np.where(a == FILL, 0, a) for c, a in low.items()}
    probs = {c: (np.arange(N_CLASSES[c])[:, None, None] == low[c][None]).astype(np.float32) for c in ("SOD", "FLOE")}
    return dataclasses.replace(pred_for, sic=low["SIC"].astype(np.float32), probs=probs, model_id="labels", sic_se=None, temperature={})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene")
    ap.add_argument("outdir")
    ap.add_argument("--model", default=None)
    ap.add_argument("--real-charts", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "sigrid3"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--labels", action="store_true", help="chart the scene's own labels (one-hot, block mode at the model grid) instead of the model's prediction: regions of one class triple exist, so the pure-region round trip is tested at scale")
    args = ap.parse_args(argv)

    import fiona
    import netCDF4
    import shapely
    from pyproj import Transformer
    from shapely.geometry import shape

    from icechart.classes import FILL
    from icechart.infer.predict import predict_scene
    from icechart.model.load import load_model
    from icechart.io.scene import open_scene
    from icechart.io.sigrid3 import rasterise_chart
    from icechart.products import sigrid3, write_products
    from icechart.score import score_arrays

    report: dict = {}
    stats: list[dict] = []
    check = sigrid3.check_coverage

    def recording(geoms, charted, **kw):  # type: ignore[no-untyped-def]
        stats.append(check(geoms, charted, **kw))
        return stats[-1]

    sigrid3.VERIFY = True
    sigrid3.check_coverage = recording  # type: ignore[assignment]
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, device="cpu")
    with open_scene(args.scene) as scene:
        pred = labels_prediction(scene, pred_for=predict_scene(scene, model)) if args.labels else predict_scene(scene, model)
        paths = write_products(pred, scene, out, formats="netcdf,geotiff,shapefile,png,uncertainty,geopackage")
        shp = next(p for p in paths if p.suffix == ".shp")
        nc_path = next(p for p in paths if p.suffix == ".nc")
        cov = stats[-1]
        report["coverage"] = {
            "polygons": int(cov["polygons"]),
            "overlap_area_m2": cov["overlap_area"],
            "union_km2": cov["union_area"] / 1e6,
            "charted_km2": cov["charted_area"] / 1e6,
            "union_error": cov["union_error"],
            "sym_diff": cov.get("sym_diff"),
            "all_valid": True,
        }
        with fiona.open(shp) as src:
            feats = [(shape(f.geometry), dict(f.properties)) for f in src]
        area = np.array([p["AREA"] for _, p in feats]) / 1e6
        ice = np.array([p["POLY_TYPE"] == "I" for _, p in feats])
        partials = sum(1 for _, p in feats if p["CA"] not in ("-9",) and p["POLY_TYPE"] == "I")
        bad_codes = sum(
            1 for _, p in feats if p["POLY_TYPE"] == "I" and p["SA"] in ("00", "-9")
        ) + sum(1 for _, p in feats if p["CT"] not in ("-9", "00") and p["POLY_TYPE"] != "I")
        report["chart"] = {
            "polygons": len(feats),
            "median_km2": float(np.median(area)),
            "ice_polygons": int(ice.sum()),
            "median_ice_km2": float(np.median(area[ice])) if ice.any() else None,
            "under_10km2": float((area < 10).mean()),
            "with_partials": partials,
            "ct_without_stage": bad_codes,
            "poly_types": {t: sum(1 for _, p in feats if p["POLY_TYPE"] == t) for t in "IWLN"},
        }
        report["real_charts"] = real_chart_figures(Path(args.real_charts))
        with netCDF4.Dataset(nc_path) as nc:
            nc.set_auto_mask(False)
            sic = nc["SIC"][:]
            ref = {"SIC": np.where(sic == FILL, FILL, sic // 10), "SOD": nc["SOD"][:], "FLOE": nc["FLOE"][:]}
        charted = sic != FILL
        report["netcdf_consistency"] = {
            "charted_pixels": int(charted.sum()),
            "sic_gt0_sod_open_water": int(((sic > 0) & charted & (ref["SOD"] == 0)).sum()),
            "sic_gt0_floe_open_water": int(((sic > 0) & charted & (ref["FLOE"] == 0)).sum()),
            "sic0_with_ice_stage": int(((sic == 0) & (ref["SOD"] > 0) & (ref["SOD"] != FILL)).sum()),
        }
        chart = rasterise_chart(shp, scene)
        common = {c: np.where(chart[c] == FILL, FILL, ref[c]) for c in ref}
        sc = score_arrays(common, chart).to_dict()
        report["round_trip_vs_netcdf"] = {k: float(sc[k]) for k in ("SIC", "SOD", "FLOE", "combined")}
        lat, lon = scene.latlon()
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True).transform(lon, lat)
    triple = ref["SIC"].astype(np.int32) * 100 + ref["SOD"].astype(np.int32) * 10 + ref["FLOE"]
    masked = (ref["SIC"] == FILL) | (ref["SOD"] == FILL) | (ref["FLOE"] == FILL)
    n_pure = n_poly = 0
    pure_px = mismatch = 0
    step = 4  # every 4th pixel each way: 1.56 M points for a 5000 x 5000 scene
    xs, ys, tri, msk = x[::step, ::step], y[::step, ::step], triple[::step, ::step], masked[::step, ::step]
    ch = {c: a[::step, ::step] for c, a in chart.items()}
    rf = {c: a[::step, ::step] for c, a in ref.items()}
    for geom, p in feats:
        if p["POLY_TYPE"] not in ("I", "W"):
            continue
        core = geom.buffer(-1200.0)
        if core.is_empty:
            continue
        n_poly += 1
        minx, miny, maxx, maxy = core.bounds
        box = (xs >= minx) & (xs <= maxx) & (ys >= miny) & (ys <= maxy)
        sel = np.zeros(xs.shape, bool)
        sel[box] = shapely.contains_xy(core, xs[box], ys[box])
        if not sel.any() or msk[sel].any() or np.unique(tri[sel]).size != 1:
            continue
        n_pure += 1
        pure_px += int(sel.sum())
        mismatch += int(sum((ch[c][sel] != rf[c][sel]).sum() for c in ch))
    report["pure_regions"] = {
        "polygons_with_core": n_poly,
        "pure_polygons": n_pure,
        "pure_pixels_sampled": pure_px,
        "mismatched_values": mismatch,
    }
    from rio_cogeo.cogeo import cog_validate

    report["cog_validate"] = {
        p.name: (lambda r: {"valid": r[0], "errors": r[1], "warnings": r[2]})(cog_validate(str(p), quiet=True))
        for p in paths
        if p.suffix == ".tif"
    }
    try:
        from compliance_checker.runner import CheckSuite, ComplianceChecker

        CheckSuite.load_all_available_checkers()
        cc = out / "compliance.json"
        ComplianceChecker.run_checker(str(nc_path), ["cf:1.10", "acdd:1.3"], 0, "normal", output_filename=str(cc), output_format="json")
        res = json.loads(cc.read_text())
        cc.unlink()
        report["compliance_checker"] = {
            test: {
                prio: [m for r in res[test][f"{prio}_priorities"] if r["value"][0] < r["value"][1] for m in r["msgs"]]
                for prio in ("high", "medium", "low")
            }
            for test in res
        }
    except ImportError:
        report["compliance_checker"] = "not installed"
    text = json.dumps(report, indent=1, default=float)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
