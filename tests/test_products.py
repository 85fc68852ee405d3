"""Products: CF netCDF, GeoTIFF (EPSG:3413, colour table), SIGRID-3 shapefile, PNG, AutoICE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from icechart.classes import CHARTS, COLOURS, FILL, N_CLASSES, TO_CODE, code_to_class
from icechart.errors import ConfigError
from icechart.infer.predict import predict_scene
from icechart.model.load import load_model
from icechart.io.scene import open_scene
from icechart.products import parse_formats, product_paths, write_products
from icechart.products import sigrid3
from icechart.products.autoice import write_autoice
from icechart.products.warp import InverseGeolocation, grid_positions, parse_crs, target_grid
from icechart.testing import random_checkpoint
from icechart.synth import make_scene, write_scene

SHAPE = (157, 133)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("products")
    ds = make_scene(SHAPE, seed=21)
    scene_path = d / ds.attrs["scene_id"]
    write_scene(ds, scene_path)
    model = load_model(str(random_checkpoint(d / "m.safetensors", seed=1)))
    out = d / "out"
    out.mkdir()
    scene = open_scene(scene_path)
    pred = predict_scene(scene, model)
    timings: dict[str, float] = {}
    # sieve 2: keep the tiny scene's regions so every polygon type shows up
    paths = write_products(pred, scene, out, formats="netcdf,geotiff,shapefile,png", sieve=2, timings=timings)
    yield {"scene": scene, "pred": pred, "model": model, "out": out, "paths": paths,
           "timings": timings, "scene_path": scene_path}  # fmt: skip
    scene.close()


def _one(out: Path, pattern: str) -> Path:
    (p,) = sorted(out.glob(pattern))
    return p


def test_names_from_contract(run: dict) -> None:
    sid, mid = run["scene"].scene_id, run["model"].model_id
    expected = product_paths(sid, mid, run["out"], ["netcdf", "geotiff", "shapefile", "png"])
    assert run["paths"] == expected
    assert all(p.exists() for p in expected)
    names = {p.name for p in run["out"].iterdir()}
    assert f"{sid}_{mid}.nc" in names and f"{sid}_{mid}_SOD.tif" in names
    assert len(names) == len(expected)  # the manifest is the batch runner's (icechart.ops)
    assert not [n for n in names if n.startswith(".tmp-")]
    assert set(run["timings"]) >= {"upsample", "netcdf", "geotiff", "png", "shapefile"}


def test_netcdf_cf_layout_and_masks(run: dict) -> None:
    import netCDF4

    scene = run["scene"]
    with netCDF4.Dataset(_one(run["out"], "*.nc")) as nc:
        nc.set_auto_mask(False)
        assert nc.Conventions == "CF-1.10, ACDD-1.3"
        for key in ("title", "summary", "history", "date_created", "references", "license",
                    "time_coverage_start", "geospatial_lat_min", "model_sha256", "input_sha256"):  # fmt: skip
            assert getattr(nc, key)
        assert nc.input_file == run["scene_path"].name and len(nc.input_sha256) == 64
        assert nc.model_sha256 == run["model"].sha256
        sic = nc["SIC"]
        assert sic.dimensions == ("sar_lines", "sar_samples") and sic.shape == SHAPE
        assert sic.dtype == np.uint8 and sic._FillValue == FILL and sic.units == "%"
        assert sic.standard_name == "sea_ice_area_fraction" and "scale_factor" not in sic.ncattrs()
        assert nc["SOD"].standard_name == "sea_ice_classification"
        for chart in ("SOD", "FLOE"):
            v = nc[chart]
            assert v.flag_values.dtype == np.uint8 and list(v.flag_values) == list(range(N_CLASSES[chart]))
            assert len(v.flag_meanings.split()) == N_CLASSES[chart]
            assert f"{chart}_confidence" in v.ancillary_variables
            assert v.coordinates == "lat lon"
        assert list(nc["status_flag"].flag_masks) == [1, 2, 4]
        assert nc["lat"].dtype == np.float32 and nc["lat"].shape == SHAPE
        values = {n: nc[n][:] for n in ("SIC", "SOD", "FLOE", "SOD_confidence", "status_flag")}
        lat, lon = nc["lat"][:], nc["lon"][:]
    valid, land = scene.valid(), scene.land()
    masked = ~valid | land
    assert masked.any() and (~valid).any() and land.any()
    for n in ("SIC", "SOD", "FLOE", "SOD_confidence"):
        assert np.array_equal(values[n] == FILL, masked), n
    assert set(np.unique(values["SIC"])) <= set(range(0, 101, 10)) | {FILL}
    assert values["SOD_confidence"][~masked].max() <= 100
    exact_lat, exact_lon = scene.latlon()
    assert np.abs(lat - exact_lat).max() < 1e-4 and np.abs(lon - exact_lon).max() < 1e-4


def test_netcdf_opens_with_xarray(run: dict) -> None:
    import xarray as xr

    with xr.open_dataset(_one(run["out"], "*.nc"), mask_and_scale=False) as ds:
        assert ds.SIC.shape == SHAPE
        assert "lat" in ds.coords and "lon" in ds.coords


def test_geotiff_projected_with_colour_table(run: dict) -> None:
    import rasterio
    from pyproj import Transformer

    scene = run["scene"]
    lat, lon = scene.latlon()
    to3413 = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True)
    x, y = to3413.transform(lon, lat)
    import netCDF4

    with netCDF4.Dataset(_one(run["out"], "*.nc")) as nc:
        nc.set_auto_mask(False)
        nc_values = {c: set(np.unique(nc[c][:]).tolist()) for c in CHARTS}
    for chart in CHARTS:
        with rasterio.open(_one(run["out"], f"*_{chart}.tif")) as src:
            assert src.crs.to_epsg() == 3413
            assert src.res == (200.0, 200.0)
            assert src.nodata == FILL and src.dtypes[0] == "uint8"
            assert src.profile["compress"].lower() == "deflate" and src.profile["tiled"]
            b = src.bounds
            assert all(v % 200 == 0 for v in b)  # snapped to whole multiples
            # covers the scene's lat/lon footprint
            assert b.left <= x.min() and b.right >= x.max() and b.bottom <= y.min() and b.top >= y.max()
            cmap = src.colormap(1)
            k = 3
            stored = 10 * k if chart == "SIC" else k
            assert cmap[stored][:3] == COLOURS[chart][k]
            data = src.read(1)
        assert set(np.unique(data).tolist()) <= nc_values[chart] | {FILL}
        assert (data != FILL).mean() > 0.3
    assert not list(run["out"].glob("*.aux.xml"))


def test_geotiff_pixels_sit_on_their_sar_pixels(run: dict) -> None:
    """A charted SAR pixel deep inside a uniform region: its projected position in the GeoTIFF
    holds the netCDF's value (checks the warp's geometry, not just its bounds)."""
    import netCDF4
    import rasterio
    from pyproj import Transformer
    from scipy import ndimage

    scene = run["scene"]
    with netCDF4.Dataset(_one(run["out"], "*.nc")) as nc:
        nc.set_auto_mask(False)
        sod = nc["SOD"][:]
    # pixels whose 7x7 neighbourhood is uniform and charted
    uniform = (ndimage.maximum_filter(sod, 7) == ndimage.minimum_filter(sod, 7)) & (sod != FILL)
    uniform[:4] = uniform[-4:] = False  # a 200 m pixel centre near the edge may fall outside
    uniform[:, :4] = uniform[:, -4:] = False
    rr, cc = np.nonzero(uniform)
    pick = np.random.default_rng(0).choice(rr.size, size=min(50, rr.size), replace=False)
    lat, lon = scene.latlon(rows=rr[pick].astype(float), cols=cc[pick].astype(float))
    lat, lon = np.diag(lat), np.diag(lon)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True).transform(lon, lat)
    with rasterio.open(_one(run["out"], "*_SOD.tif")) as src:
        vals = [v[0] for v in src.sample(list(zip(x, y)))]
    np.testing.assert_array_equal(np.array(vals), sod[rr[pick], cc[pick]])


def test_inverse_geolocation_round_trip(run: dict) -> None:
    from pyproj import Transformer

    scene, pred = run["scene"], run["pred"]
    crs = parse_crs("EPSG:3413")
    inv = InverseGeolocation(scene, *pred.centres(), crs)
    rows = np.array([0.0, 10.3, 77.0, 156.0])
    cols = np.array([0.0, 5.5, 66.0, 132.0])
    lat, lon = scene.latlon(rows=rows, cols=cols)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True).transform(lon, lat)
    r, c = inv.to_pixel(x, y)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    assert np.abs(r - rr.ravel()).max() < 0.05 and np.abs(c - cc.ravel()).max() < 0.05
    # the interpolated inverse between exact nodes stays far below a pixel
    grid = target_grid(scene, crs, 200.0)
    ar, ac = grid_positions(inv, grid, slice(0, grid.height), step=8)
    xx, yy = np.meshgrid(grid.centres_x(np.arange(grid.width)), grid.centres_y(np.arange(grid.height)))
    er, ec = inv.to_pixel(xx, yy)
    inside = (er > 0) & (er < SHAPE[0] - 1) & (ec > 0) & (ec < SHAPE[1] - 1)
    assert np.abs(ar.ravel() - er)[inside].max() < 0.05
    assert np.abs(ac.ravel() - ec)[inside].max() < 0.05


def test_shapefile_valid_polygons_and_codes(run: dict) -> None:
    import fiona
    from shapely.geometry import shape

    shp = _one(run["out"], "*_sigrid3.shp")
    for ext in (".shx", ".dbf", ".prj", ".cpg"):
        assert shp.with_suffix(ext).exists()
    assert shp.with_suffix(".cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
    with fiona.open(shp) as src:
        assert src.crs.to_epsg() == 3413
        props = src.schema["properties"]
        assert list(props) == list(sigrid3.FIELDS)
        assert props["CF"].startswith("str:4") and props["CT"].startswith("str:2")
        records = list(src)
    assert records
    types = set()
    for rec in records:
        geom = shape(rec["geometry"])
        assert geom.is_valid and not geom.is_empty and geom.geom_type in ("Polygon", "MultiPolygon")
        p = dict(rec["properties"])
        types.add(p["POLY_TYPE"])
        assert all(len(p[f]) <= (4 if f == "CF" else 2) for f in sigrid3.FIELDS)
        if p["POLY_TYPE"] == "I":
            assert p["CA"] == p["CT"]
            sic = code_to_class("SIC", np.array([int(p["CT"])]))[0]
            assert 1 <= sic <= 10
            assert code_to_class("SOD", np.array([int(p["SA"])]))[0] < 6
            assert code_to_class("FLOE", np.array([int(p["FA"])]))[0] < 7
        elif p["POLY_TYPE"] == "W":
            assert p["CT"] == "00"
    assert types <= {"I", "W", "L", "N"}
    assert "L" in types and "I" in types


@pytest.mark.parametrize("chart", CHARTS)
def test_codes_round_trip(chart: str) -> None:
    """class -> SIGRID-3 code -> class is the identity (through the AI4Arctic tables)."""
    classes = np.arange(N_CLASSES[chart])
    codes = np.array([int(sigrid3.code_str(chart, k)) for k in classes])
    np.testing.assert_array_equal(code_to_class(chart, codes), classes)
    assert all(len(sigrid3.code_str(chart, k)) == 2 for k in classes)
    assert sigrid3.code_str("SIC", 10) == "92" and sigrid3.code_str("SOD", 1) == "81"
    assert TO_CODE["FLOE"][6] == 10


def test_attributes_of_region_codes() -> None:
    a = sigrid3.attributes(10 * 100 + 4 * 10 + 5)
    assert a["CT"] == "92" and a["CA"] == "92" and a["SA"] == "93" and a["FA"] == "06" and a["POLY_TYPE"] == "I"
    assert sigrid3.attributes(0)["POLY_TYPE"] == "W"
    assert sigrid3.attributes(2000)["POLY_TYPE"] == "L" and sigrid3.attributes(3000)["POLY_TYPE"] == "N"


def test_sieve_generalises() -> None:
    from affine import Affine

    regions = np.full((40, 40), 510, np.int32)
    regions[10:12, 10:12] = 320  # a 4-pixel speck
    inside = np.ones((40, 40), bool)
    t = Affine(800, 0, 0, 0, -800, 0)
    assert len(sigrid3.polygons(regions, inside, t, sieve=0)) == 2
    polys = sigrid3.polygons(regions, inside, t, sieve=8, simplify=400)
    assert len(polys) == 1 and polys[0][1] == 510 and polys[0][0].is_valid


def test_quicklooks(run: dict) -> None:
    from PIL import Image

    for chart in CHARTS:
        with Image.open(_one(run["out"], f"*_{chart}.png")) as im:
            assert max(im.size) <= 2000 and im.format == "PNG"


def test_autoice_file(run: dict, tmp_path: Path) -> None:
    import shutil

    import netCDF4

    from icechart.ops import manifest as M

    mid, sid = run["model"].model_id, run["scene"].scene_id
    out = tmp_path / "out"
    out.mkdir()
    nc_path = out / f"{sid}_{mid}.nc"
    shutil.copy(_one(run["out"], f"{sid}_*.nc"), nc_path)
    assert write_autoice(out, mid) is None  # no manifest: not a complete scene
    data = M.build_manifest(scene_id=sid, input_path=run["scene_path"], model_id=mid, model_sha256=None,
                            options={}, files=[nc_path], device="cpu", timings={})  # fmt: skip
    M.write_manifest(M.manifest_path(out, sid, mid), data)
    path = write_autoice(out, mid)
    assert path is not None and path.name == f"autoice_{mid}.nc"
    mtime = path.stat().st_mtime_ns
    assert write_autoice(out, mid) == path and path.stat().st_mtime_ns == mtime  # up to date: kept
    with netCDF4.Dataset(path) as nc, netCDF4.Dataset(nc_path) as prod:
        nc.set_auto_mask(False)
        prod.set_auto_mask(False)
        assert set(nc.variables) == {f"{sid}_{c}" for c in CHARTS}
        assert not nc.dimensions.keys() - {f"{sid}_{c}_dim{k}" for c in CHARTS for k in (0, 1)}
        sic = nc[f"{sid}_SIC"]
        assert sic.dtype == np.uint8 and sic.shape == SHAPE
        assert sic.filters()["zlib"] and sic.filters()["complevel"] == 1
        pct = prod["SIC"][:]
        np.testing.assert_array_equal(sic[:], np.where(pct == FILL, FILL, pct // 10))
        np.testing.assert_array_equal(nc[f"{sid}_SOD"][:], prod["SOD"][:])


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="unknown format"):
        parse_formats("netcdf,kml")
    assert parse_formats("autoice") == ("autoice", "netcdf")
    with pytest.raises(ConfigError, match="not a projected CRS"):
        parse_crs("EPSG:4326")
    with pytest.raises(ConfigError, match="unknown CRS"):
        parse_crs("EPSG:999999")


def test_failure_leaves_nothing(run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import icechart.products.quicklook as ql

    def boom(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ql, "write_quicklook", boom)
    from icechart.errors import OutputIOError

    with pytest.raises(OutputIOError):
        write_products(run["pred"], run["scene"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_other_crs_and_resolution(run: dict, tmp_path: Path) -> None:
    import rasterio

    paths = write_products(run["pred"], run["scene"], tmp_path, formats=["geotiff"], crs="6931", resolution=500)
    with rasterio.open(paths[0]) as src:
        assert src.crs.to_epsg() == 6931 and src.res == (500.0, 500.0)
        assert all(v % 500 == 0 for v in src.bounds)


DUMMY_FORMAT = '''
"""A test format: the number of charted pixels per SOD class, as text."""
import numpy as np


class CountSink:
    stage = "count"

    def __init__(self, ctx):
        self.ctx = ctx
        self.counts = np.zeros(256, np.int64)

    def add(self, block):
        self.counts += np.bincount(block.charts["SOD"].ravel(), minlength=256)

    def finish(self):
        dest = self.ctx.outdir / f"{self.ctx.stem}_sodcount.txt"
        self.ctx.temporary(dest).write_text(" ".join(str(int(n)) for n in self.counts[:6]) + "\\n")
        return [dest]
'''


def test_a_new_format_is_one_module(run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A format = one module with a sink + one registry entry: names, --formats, fingerprint follow."""
    import icechart.products as products
    from icechart.pipeline.predict import product_options

    (tmp_path / "icechart_test_sodcount.py").write_text(DUMMY_FORMAT)
    monkeypatch.syspath_prepend(str(tmp_path))
    fmt = products.Format(
        "sodcount", "SOD pixel counts", lambda se: ["_sodcount.txt"], "icechart_test_sodcount:CountSink"
    )
    monkeypatch.setitem(products.REGISTRY, "sodcount", fmt)
    assert "sodcount" in products.FORMATS and "sodcount" not in products.DEFAULT_FORMATS
    assert parse_formats("netcdf,sodcount") == ("netcdf", "sodcount")
    assert "sodcount: SOD pixel counts" in products.formats_help()
    sid, mid = run["scene"].scene_id, run["model"].model_id
    out = tmp_path / "out"
    out.mkdir()
    timings: dict[str, float] = {}
    paths = write_products(run["pred"], run["scene"], out, formats="sodcount,png", timings=timings)
    assert paths == product_paths(sid, mid, out, ["png", "sodcount"])
    assert paths[-1].name == f"{sid}_{mid}_sodcount.txt"
    counts = [int(n) for n in paths[-1].read_text().split()]
    sod = np.concatenate([b.charts["SOD"] for b in run["pred"].blocks(run["scene"])])
    assert counts == [int((sod == k).sum()) for k in range(6)]
    assert timings["count"] >= 0 and not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    opts = product_options("sodcount", crs="EPSG:3413", resolution=200.0, sieve=None, tile_size=None, tta=False)
    assert opts == {"formats": ["sodcount"], "tile_size": 512, "tta": False}


def test_fingerprint_only_counts_options_the_formats_use() -> None:
    from icechart.products import fingerprint

    assert fingerprint("netcdf,png", crs="EPSG:3413", resolution=200.0, sieve=None) == {"formats": ["netcdf", "png"]}
    assert fingerprint("shapefile", crs="EPSG:6931", resolution=100.0, sieve=None) == {
        "formats": ["shapefile"], "crs": "EPSG:6931", "sieve": 16,
    }
    assert fingerprint("autoice,uncertainty", crs="EPSG:3413", resolution=400, sieve=3) == {
        "formats": ["netcdf", "uncertainty"], "crs": "EPSG:3413", "resolution": 400.0,
    }
