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
from icechart.products import sigrid3, styles
from icechart.products.styles import LAND_RGB, LAND_VALUE
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
            assert v.coordinates == "time lat lon"
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
            assert cmap[LAND_VALUE][:3] == LAND_RGB and cmap[FILL][3] == 0
            data = src.read(1)
        assert set(np.unique(data).tolist()) <= nc_values[chart] | {LAND_VALUE, FILL}
        assert (data == LAND_VALUE).any()  # land is told apart from no data
        assert (data < LAND_VALUE).mean() > 0.3
    # GDAL reads only the category names and attribute table from the sidecar we write
    assert sorted(p.name.split("_")[-1] for p in run["out"].glob("*.aux.xml")) == [
        f"{c}.tif.aux.xml" for c in sorted(CHARTS)
    ]


def test_geotiffs_are_valid_cogs(run: dict, tmp_path: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    tifs = sorted(run["out"].glob("*.tif"))
    assert len(tifs) == 3
    for tif in tifs:
        valid, errors, warnings = cog_validate(str(tif), quiet=True)
        assert valid and not errors, (tif.name, errors, warnings)
    # the uncertainty layers too
    paths = write_products(run["pred"], run["scene"], tmp_path, formats=["uncertainty"])
    layers = [p for p in paths if p.suffix == ".tif"]
    assert len(layers) == 2 and all(p.with_suffix(".qml").exists() for p in layers)
    for tif in layers:
        valid, errors, _ = cog_validate(str(tif), quiet=True)
        assert valid and not errors, (tif.name, errors)


def test_geotiff_category_names_and_qgis_styles(run: dict) -> None:
    import xml.etree.ElementTree as ET

    import rasterio

    for chart in CHARTS:
        tif = _one(run["out"], f"*_{chart}.tif")
        pam = ET.parse(tif.with_name(tif.name + ".aux.xml")).getroot()
        names = [c.text or "" for c in pam.iter("Category")]
        rows = {int(r[0].text): r[1].text for r in (list(row) for row in pam.iter("Row"))}
        for k in range(N_CLASSES[chart]):
            v = 10 * k if chart == "SIC" else k
            assert names[v] == rows[v] == styles.class_label(chart, k)
        assert names[LAND_VALUE] == "land" and len(names) == LAND_VALUE + 1
        with rasterio.open(tif) as src:  # GDAL picks the sidecar up (PAM) and still reads the COG
            assert src.descriptions[0]
            assert "disclaimer" in src.tags() and "navigation" in src.tags()["disclaimer"]
        qml = ET.parse(tif.with_suffix(".qml")).getroot()
        renderer = qml.find("pipe/rasterrenderer")
        assert renderer is not None and renderer.get("type") == "paletted"
        entries = {int(e.get("value")): (e.get("label"), e.get("color")) for e in renderer.iter("paletteEntry")}
        k = 3
        v = 10 * k if chart == "SIC" else k
        assert entries[v] == (styles.class_label(chart, k), "#{:02x}{:02x}{:02x}".format(*COLOURS[chart][k]))
        assert entries[LAND_VALUE][0] == "land" and FILL not in entries
    shp_qml = ET.parse(_one(run["out"], "*_sigrid3.qml")).getroot()
    rules = list(shp_qml.iter("rule"))
    assert len(rules) == len(styles.vector_rules()) and {r.get("label") for r in rules} >= {"land", "CT 10/10"}
    assert len(list(shp_qml.iter("symbol"))) == len(rules)


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
    for ext in (".shx", ".dbf", ".prj", ".cpg", ".qml"):
        assert shp.with_suffix(ext).exists()
    assert shp.with_suffix(".cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
    with fiona.open(shp) as src:
        assert src.crs.to_epsg() == 3413
        props = src.schema["properties"]
        assert list(props) == list(sigrid3.FIELDS)
        assert props["CF"].startswith("str:4") and props["CT"].startswith("str:2")
        assert props["AREA"].startswith("float") and props["PERIMETER"].startswith("float")
        records = list(src)
    assert records
    types = set()
    geoms = []
    for rec in records:
        geom = shape(rec["geometry"])
        geoms.append(geom)
        assert geom.is_valid and not geom.is_empty and geom.geom_type == "Polygon"
        p = dict(rec["properties"])
        assert p["AREA"] == pytest.approx(geom.area, rel=1e-6) and p["PERIMETER"] == pytest.approx(geom.length, rel=1e-6)
        types.add(p["POLY_TYPE"])
        assert all(len(p[f]) <= (4 if f == "CF" else 2) for f in sigrid3.CODE_FIELDS)
        sigrid3.check_codes(p)
        if p["POLY_TYPE"] == "I":
            sic = code_to_class("SIC", np.array([int(p["CT"])]))[0]
            assert 1 <= sic <= 10
            assert code_to_class("SOD", np.array([int(p["SA"])]))[0] < 6
            assert code_to_class("FLOE", np.array([int(p["FA"])]))[0] < 7
        elif p["POLY_TYPE"] == "W":
            assert p["CT"] == "00"
    assert types <= {"I", "W", "L", "N"}
    assert "L" in types and "I" in types
    # the file as written (after the shapefile's own rounding) is still a coverage
    import shapely

    assert shapely.coverage_is_valid(np.array(geoms, dtype=object))


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
    # one ice type: CT is its concentration, CA -9 (CIS practice; read back as CA = CT)
    assert a["CT"] == "92" and a["CA"] == "-9" and a["SA"] == "93" and a["FA"] == "06" and a["POLY_TYPE"] == "I"
    assert a["SB"] == a["CB"] == a["CD"] == "-9"
    assert sigrid3.attributes(0)["POLY_TYPE"] == "W" and sigrid3.attributes(0)["CT"] == "00"
    assert sigrid3.attributes(0)["SA"] == "-9"
    assert sigrid3.attributes(2000)["POLY_TYPE"] == "L" and sigrid3.attributes(3000)["POLY_TYPE"] == "N"
    for code in (0, 2000, 3000, 1045, 153):
        sigrid3.check_codes(sigrid3.attributes(code))


def test_egg_code_partials_from_the_pixel_distribution() -> None:
    from icechart.io.sigrid3 import polygon_classes

    # 60 % of the pixels thick FYI (SOD 4) at 9/10 with big floes, 40 % new ice (SOD 1) at 9/10
    # with cake ice: CT 9, CA 5 thick FYI, CB 4 new ice (largest remainder: 5.4 + 3.6 -> 5 + 4)
    e = sigrid3.egg_code({944: 60, 911: 40})
    assert (e["CT"], e["CA"], e["SA"], e["FA"], e["CB"], e["SB"], e["FB"]) == ("90", "50", "93", "05", "40", "81", "02")
    assert e["CC"] == e["SC"] == e["CD"] == "-9" and e["POLY_TYPE"] == "I"
    sigrid3.check_codes(e)
    # 5/9 is below the 65 % dominance: SOD masked on reading, SIC exact
    assert polygon_classes(e)[0] == 9 and polygon_classes(e)[1] == 255
    # four stages: the three largest are the partials (thickest first), the fourth in CD
    e = sigrid3.egg_code({1055: 50, 1033: 30, 1022: 15, 1011: 5})
    assert [e[k] for k in ("CT", "CA", "SA", "CB", "SB", "CC", "SC", "CD")] == ["92", "60", "95", "30", "87", "10", "83", "81"]  # 5.5 3 1.5 tenths: the tie to the larger
    sigrid3.check_codes(e)
    # ice free pixels lower CT; mostly water -> a W polygon, no stage
    e = sigrid3.egg_code({0: 80, 255: 20})
    assert e["POLY_TYPE"] == "W" and e["CT"] == "00" and e["SA"] == "-9"
    e = sigrid3.egg_code({0: 50, 555: 50})  # mean 2.5 -> CT 3, one ice type
    assert (e["CT"], e["CA"], e["SA"], e["FA"]) == ("30", "-9", "95", "06")
    # a dominant stage (>= 65 %) reads back as that class
    e = sigrid3.egg_code({1044: 80, 1033: 20})
    assert polygon_classes(e) == (10, 4, 4)
    # land / no data only
    assert sigrid3.egg_code({2000: 5, 3000: 2})["POLY_TYPE"] == "L"
    assert sigrid3.egg_code({2000: 1, 3000: 2})["POLY_TYPE"] == "N"


def test_sieve_generalises() -> None:
    from affine import Affine

    regions = np.full((40, 40), 510, np.int32)
    regions[10:12, 10:12] = 320  # a 4-pixel speck
    inside = np.ones((40, 40), bool)
    t = Affine(800, 0, 0, 0, -800, 0)
    assert len(sigrid3.chart_polygons(regions, inside, t, sieve=0)) == 2
    polys = sigrid3.chart_polygons(regions, inside, t, sieve=8, simplify=800)
    assert len(polys) == 1 and polys[0][0].is_valid
    # the speck's pixels shape the egg code: 4 of 1600 pixels at 3/10 do not move CT 5
    assert polys[0][1] == sigrid3.attributes(510)
    assert sigrid3.sieve_pixels(25.0, 800.0) == 40 == sigrid3.DEFAULT_SIEVE
    assert sigrid3.sieve_pixels(0.0, 800.0) == 1


def test_coverage_shared_boundaries_and_simplification() -> None:
    """Noisy classes -> a coverage: no overlap, no gap, union = the charted area, after
    simplification too; the outer boundary is kept exactly."""
    import shapely
    from affine import Affine

    rng = np.random.default_rng(3)
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=(90, 80)), 4)
    regions = (np.digitize(field, np.quantile(field, [0.2, 0.4, 0.6, 0.8])) * 100 + 455).astype(np.int32)
    regions[field > np.quantile(field, 0.9)] = 2000
    inside = np.ones(regions.shape, bool)
    inside[:7, :11] = False  # a notch off the scene
    inside[60:, 70:] = False
    t = Affine(800, 0, -1e5, 0, -800, 2e5)
    for simplify in (0.0, 800.0, 2400.0):
        polys = sigrid3.chart_polygons(regions, inside, t, sieve=10, simplify=simplify)
        geoms = [g for g, _ in polys]
        charted = shapely.transform(sigrid3.charted_area(inside), lambda xy: np.column_stack([t.a * xy[:, 0] + t.c, t.e * xy[:, 1] + t.f]))
        stats = sigrid3.check_coverage(geoms, charted)
        assert stats["overlap_area"] == 0.0 and stats["union_error"] < 1e-9 and stats["sym_diff"] < 1e-9
    n_vertices = sum(shapely.get_num_coordinates(g) for g in geoms)
    n_raw = sum(shapely.get_num_coordinates(g) for g, _ in sigrid3.chart_polygons(regions, inside, t, sieve=10))
    assert n_vertices < 0.5 * n_raw  # simplified
    # a broken coverage is caught
    from shapely.geometry import box

    with pytest.raises(AssertionError, match="overlap"):
        sigrid3.check_coverage([box(0, 0, 2, 2), box(1, 1, 3, 3)], 7.0)
    with pytest.raises(AssertionError):
        sigrid3.check_coverage([box(0, 0, 1, 1), box(2, 0, 3, 1)], box(0, 0, 3, 1))  # a gap


def test_quicklooks(run: dict) -> None:
    from PIL import Image

    for chart in CHARTS:
        with Image.open(_one(run["out"], f"*_{chart}.png")) as im:
            assert max(im.size) <= 2000 and im.format == "PNG"


def _decisions(run: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The network's unmasked full-resolution classes and the status flag of the fixture scene."""
    blocks = list(run["pred"].blocks(run["scene"], decisions=True))
    dec = {c: np.concatenate([b.decision[c] for b in blocks]) for c in CHARTS}
    return dec, np.concatenate([b.status for b in blocks])


def _read_autoice(path: Path, sid: str) -> dict[str, np.ndarray]:
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        return {c: nc[f"{sid}_{c}"][:] for c in CHARTS}


def test_autoice_file(run: dict, tmp_path: Path) -> None:
    import netCDF4

    from icechart.ops import manifest as M

    mid, sid = run["model"].model_id, run["scene"].scene_id
    out = tmp_path / "out"
    out.mkdir()
    files = write_products(run["pred"], run["scene"], out, formats="autoice")
    part = out / f"{sid}_{mid}_autoice.nc"
    assert files == product_paths(sid, mid, out, ["netcdf", "autoice"]) and part in files
    assert write_autoice(out, mid) is None  # no manifest: not a complete scene
    data = M.build_manifest(scene_id=sid, input_path=run["scene_path"], model_id=mid, model_sha256=None,
                            options={}, files=files, device="cpu", timings={})  # fmt: skip
    M.write_manifest(M.manifest_path(out, sid, mid), data)
    path = write_autoice(out, mid)
    assert path is not None and path.name == f"autoice_{mid}.nc"
    mtime = path.stat().st_mtime_ns
    assert write_autoice(out, mid) == path and path.stat().st_mtime_ns == mtime  # up to date: kept
    with netCDF4.Dataset(path) as nc:
        assert set(nc.variables) == {f"{sid}_{c}" for c in CHARTS}
        assert not nc.dimensions.keys() - {f"{sid}_{c}_dim{k}" for c in CHARTS for k in (0, 1)}
        sic = nc[f"{sid}_SIC"]
        assert sic.dtype == np.uint8 and sic.shape == SHAPE
        assert sic.filters()["zlib"] and sic.filters()["complevel"] == 1
    got = _read_autoice(path, sid)
    dec, status = _decisions(run)
    assert (status != 0).any() and (status == 0).any()  # the scene has masked pixels
    with netCDF4.Dataset(out / f"{sid}_{mid}.nc") as prod:
        prod.set_auto_mask(False)
        product = {c: prod[c][:] for c in CHARTS}
    for c in CHARTS:
        assert not (got[c] == FILL).any(), c  # classes at every pixel of the SAR geometry
        np.testing.assert_array_equal(got[c], dec[c])  # the network's decision, masked pixels too
        np.testing.assert_array_equal(_read_autoice(part, sid)[c], dec[c])
        # where nothing is masked the file agrees with the (masked) netCDF product
        valid = status == 0
        prod_c = product[c] // 10 if c == "SIC" else product[c]
        np.testing.assert_array_equal(got[c][valid], prod_c[valid])
        assert (product[c][~valid] == FILL).all()  # the product itself stays masked


def test_autoice_scores_where_the_reference_labels_masked_pixels(run: dict, tmp_path: Path) -> None:
    """A reference that labels pixels icechart masks (invalid SAR, land): the submission is scored
    on the network's decision there, never on 255 (which wrecks SIC R^2)."""
    from icechart.ops import manifest as M
    from icechart.score import score_arrays

    mid, sid = run["model"].model_id, run["scene"].scene_id
    out = tmp_path / "out"
    out.mkdir()
    files = write_products(run["pred"], run["scene"], out, formats="autoice")
    M.write_manifest(M.manifest_path(out, sid, mid), M.build_manifest(
        scene_id=sid, input_path=run["scene_path"], model_id=mid, model_sha256=None,
        options={}, files=files, device="cpu", timings={},
    ))  # fmt: skip
    path = write_autoice(out, mid)
    assert path is not None
    sub = _read_autoice(path, sid)
    dec, status = _decisions(run)
    masked = status != 0
    rng = np.random.default_rng(3)
    # The reference labels every pixel, the masked ones too (as a hidden AutoICE reference may):
    # random classes where icechart charts, the network's own decision where it masks.
    ref = {c: np.where(masked, dec[c], rng.integers(0, N_CLASSES[c], dec[c].shape)).astype(np.uint8) for c in CHARTS}
    got = score_arrays(ref, sub).scores
    assert got == pytest.approx(score_arrays(ref, dec).scores)
    old = {c: np.where(masked, FILL, dec[c]).astype(np.uint8) for c in CHARTS}  # 255 where masked
    before = score_arrays(ref, old).scores
    for c in CHARTS:
        assert before[c] < got[c], c
    assert before["SIC"] < got["SIC"] - 1.0  # R^2: 255 against classes 0..10


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


def test_netcdf_metadata_acdd_and_time(run: dict, tmp_path: Path) -> None:
    import netCDF4
    import shapely

    from icechart.products.netcdf import NOT_FOR_NAVIGATION

    scene = run["scene"]
    with netCDF4.Dataset(_one(run["out"], "*.nc")) as nc:
        for name, v in nc.variables.items():
            assert v.getncattr("coverage_content_type") in (
                "modelResult", "thematicClassification", "qualityInformation", "coordinate"
            ), name  # fmt: skip
        assert nc["status_flag"].standard_name == "status_flag"
        assert nc["SOD_confidence"].standard_name == "quality_flag"
        t = nc["time"]
        assert t.dimensions == () and t.standard_name == "time" and t.axis == "T"
        when = netCDF4.num2date(t[...], t.units, t.calendar, only_use_cftime_datetimes=False)
        assert when.replace(tzinfo=None) == scene.time.replace(tzinfo=None, microsecond=0)
        assert nc["SIC"].coordinates.split() == ["time", "lat", "lon"]
        assert nc.comment == NOT_FOR_NAVIGATION and "NOT FOR NAVIGATION" in nc.comment
        assert nc.geospatial_bounds_crs == "EPSG:4326"
        bounds = shapely.from_wkt(nc.geospatial_bounds)  # latitude-longitude order
        lat, lon = scene.latlon()
        pts = shapely.points(lat.ravel()[::97], lon.ravel()[::97])
        assert shapely.contains(bounds.buffer(1e-3), pts).all()
        assert nc.geospatial_lon_min < nc.geospatial_lon_max  # not across 180 here
        assert nc.institution and nc.id.startswith(scene.scene_id)
    # the producer's attributes ([predict] institution, creator_*, publisher_*)
    meta = {"institution": "Example Ice Service", "creator_name": "A. Analyst", "publisher_url": "https://ice.example"}
    (path,) = write_products(run["pred"], scene, tmp_path, formats=["netcdf"], metadata=meta)
    with netCDF4.Dataset(path) as nc:
        assert {k: nc.getncattr(k) for k in meta} == meta


@pytest.mark.parametrize(
    ("center", "crosses"), [((75.0, 179.99), "antimeridian"), ((89.99, 10.0), "pole"), ((81.0, -179.995), "antimeridian")]
)
def test_footprint_across_the_antimeridian_and_the_pole(tmp_path: Path, center: tuple, crosses: str) -> None:
    import shapely

    from icechart.products.netcdf import LatLonBlocks

    ds = make_scene((120, 110), seed=4, center=center)
    write_scene(ds, tmp_path / ds.attrs["scene_id"])
    with open_scene(tmp_path / ds.attrs["scene_id"]) as scene:
        fp = LatLonBlocks(scene).footprint()
        lat, lon = scene.latlon()
    bounds = shapely.from_wkt(fp["geospatial_bounds"])
    pts = shapely.points(lat.ravel()[::13], lon.ravel()[::13])
    assert shapely.contains(bounds.buffer(1e-3), pts).all()
    if crosses == "antimeridian":
        # ACDD: westernmost > easternmost across 180; two parts, none wider than the scene
        assert fp["geospatial_lon_min"] > 170 and fp["geospatial_lon_max"] < -170
        assert bounds.geom_type == "MultiPolygon" and len(bounds.geoms) == 2
        assert bounds.area < 1.0
    else:
        assert (fp["geospatial_lon_min"], fp["geospatial_lon_max"]) == (-180.0, 180.0)
        assert bounds.bounds[2] == 90.0 and bounds.bounds[0] > 89.0


def test_compliance_checker_cf_and_acdd(run: dict, tmp_path: Path) -> None:
    """IOOS compliance-checker: CF-1.10 without high or medium failures, ACDD-1.3 without high
    ones (the medium ones left are attributes only the producer can set)."""
    import json

    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    out = tmp_path / "cc.json"
    ComplianceChecker.run_checker(
        str(_one(run["out"], "*.nc")), ["cf:1.10", "acdd:1.3"], 0, "normal", output_filename=str(out), output_format="json"
    )
    report = json.loads(out.read_text())
    levels = {"cf:1.10": ("high_priorities", "medium_priorities"), "acdd:1.3": ("high_priorities",)}
    for test, prios in levels.items():
        assert report[test]["high_priorities"], test  # the checks ran
        for prio in prios:
            failed = [(r["name"], r["msgs"]) for r in report[test][prio] if r["value"][0] < r["value"][1]]
            assert not failed, (test, prio, failed)


def test_land_and_no_data_regions_stay_land_and_no_data() -> None:
    """A land region that swallowed specks of sea stays land (the sieved region's own type)."""
    from affine import Affine

    regions = np.full((30, 30), 944, np.int32)
    regions[:, :12] = 2000  # land
    regions[:, 25:] = 3000  # no data
    regions[5, 5] = regions[20, 3] = 911  # specks of ice in the land
    regions[10, 27] = 0  # water in the no-data strip
    polys = sigrid3.chart_polygons(regions, np.ones(regions.shape, bool), Affine(800, 0, 0, 0, -800, 0), sieve=4)
    assert sorted(p["POLY_TYPE"] for _, p in polys) == ["I", "L", "N"]
    land = next(p for _, p in polys if p["POLY_TYPE"] == "L")
    assert land == sigrid3.attributes(2000)


def test_geopackage_in_product_crs_and_lonlat_split_at_180(tmp_path: Path) -> None:
    """A scene across the antimeridian: the GeoPackage's lon/lat layer is cut at ±180° and
    covers what the projected layer covers; both layers carry the codes and a default style."""
    import sqlite3

    import fiona
    import shapely
    from pyproj import Transformer
    from shapely.geometry import shape

    ds = make_scene((300, 280), seed=8, center=(76.0, 179.9))
    write_scene(ds, tmp_path / ds.attrs["scene_id"])
    model = load_model(str(random_checkpoint(tmp_path / "m.safetensors", seed=1)))
    out = tmp_path / "out"
    out.mkdir()
    with open_scene(tmp_path / ds.attrs["scene_id"]) as scene:
        pred = predict_scene(scene, model)
        paths = write_products(pred, scene, out, formats="geopackage", sieve=2)
    (gpkg,) = paths
    # the chart first (a reader taking the first layer gets it), QGIS's style table last
    assert gpkg.name.endswith("_sigrid3.gpkg") and fiona.listlayers(gpkg) == [*sigrid3.GPKG_LAYERS, "layer_styles"]
    with fiona.open(gpkg, layer="sigrid3") as src:
        assert src.crs.to_epsg() == 3413
        proj = [(shape(f.geometry), dict(f.properties)) for f in src]
    with fiona.open(gpkg, layer="sigrid3_epsg4326") as src:
        assert src.crs.to_epsg() == 4326
        ll = [(shape(f.geometry), dict(f.properties)) for f in src]
    assert len(ll) == len(proj) and [p for _, p in ll] == [p for _, p in proj]
    assert all(g.is_valid for g, _ in ll)
    west = [g for g, _ in ll if g.bounds[0] < 0]
    east = [g for g, _ in ll if g.bounds[2] > 0]
    assert west and east  # on both sides of the antimeridian
    assert all(-180.0 <= g.bounds[0] and g.bounds[2] <= 180.0 for g, _ in ll)
    assert all(g.bounds[2] - g.bounds[0] < 20 or len(g.geoms) > 1 for g, _ in ll)  # cut, not wrapped round
    # back in EPSG:3413 the lon/lat layer covers the projected one (to a densified edge's error)
    t = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True)
    back = shapely.union_all([shapely.transform(g, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))) for g, _ in ll])
    union = shapely.union_all([g for g, _ in proj])
    assert shapely.symmetric_difference(back, union).area < 1e-3 * union.area
    with sqlite3.connect(gpkg) as db:
        rows = db.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchall()
    assert sorted(r[0] for r in rows) == sorted(sigrid3.GPKG_LAYERS) and all(r[1] for r in rows)
    assert all("RuleRenderer" in r[2] for r in rows)


def test_majority_filter_cleans_boundaries_and_keeps_interiors() -> None:
    rng = np.random.default_rng(5)
    a = np.full((40, 40), 511, np.int32)
    a[:, 20:] = 922
    noisy = a.copy()
    flip = rng.random(a.shape) < 0.08
    noisy[flip] = 733  # salt: isolated pixels of a third triple
    inside = np.ones(a.shape, bool)
    inside[:, :2] = False  # off the scene: never spreads in
    noisy[~inside] = -1
    out = sigrid3.majority_filter(noisy, inside)
    assert ((out == 733) & inside).sum() < 0.1 * ((noisy == 733) & inside).sum()
    np.testing.assert_array_equal(out[~inside], noisy[~inside])
    assert (out[inside] == a[inside]).mean() > 0.98  # the two halves come back
    # a straight boundary stays put; a block keeps its interior and loses only its corners
    b = np.full((20, 20), 100, np.int32)
    b[:, 12:] = 300
    b[4:12, 3:9] = 200
    got = sigrid3.majority_filter(b, np.ones(b.shape, bool))
    np.testing.assert_array_equal(got[:, 11:], b[:, 11:])
    np.testing.assert_array_equal(got[5:11, 4:8], b[5:11, 4:8])
    assert (got != b).sum() == 4 and (got[[4, 4, 11, 11], [3, 8, 3, 8]] == 100).all()


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
        "formats": ["shapefile"], "crs": "EPSG:6931", "sieve": 40,
    }
    assert fingerprint("autoice,uncertainty", crs="EPSG:3413", resolution=400, sieve=3) == {
        "formats": ["netcdf", "autoice", "uncertainty"], "crs": "EPSG:3413", "resolution": 400.0,
    }
