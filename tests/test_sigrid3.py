"""SIGRID-3 charts as labels: code quirks, geometry quirks, real charts from ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import fiona
import numpy as np
import pytest
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import Polygon, box, mapping

from icechart.classes import FILL, TO_CODE
from icechart.errors import BadDataError
from icechart.io.scene import open_scene
from icechart.io.sigrid3 import parse_code, polygon_classes, rasterise_chart, read_chart
from icechart.score import score_arrays
from icechart.synth import PIXEL_SPACING, Geometry, make_scene, write_scene

SIGRID_DIR = Path(
    os.environ.get("ICECHART_SIGRID_DIR", Path(__file__).parents[2] / "shared" / "data" / "sigrid3")
)
FIELDS = ("CT", "CA", "SA", "FA", "CB", "SB", "FB", "CC", "SC", "FC", "POLY_TYPE")


def rec(**kw: str | None) -> dict[str, str | None]:
    d: dict[str, str | None] = {k: "-9" for k in FIELDS}
    d["POLY_TYPE"] = "I"
    d.update(kw)
    return d


# --- codes ----------------------------------------------------------------------------------
def test_parse_code() -> None:
    assert parse_code("8 ") == parse_code("08") == 8
    assert parse_code(" -9") == -9
    assert parse_code(None) is None and parse_code("  ") is None
    assert parse_code("9+") is None  # egg-code text (CIS E_ fields)


@pytest.mark.parametrize("pt", ["L", "N", "S", "l"])
def test_masked_poly_types_with_blank_codes(pt: str) -> None:
    blank = {k: None for k in FIELDS}
    blank["POLY_TYPE"] = pt
    assert polygon_classes(blank) == (FILL, FILL, FILL)


def test_water_polygon_whatever_its_codes() -> None:
    assert polygon_classes(rec(POLY_TYPE="W")) == (0, 0, 0)  # DMI: every code -9
    assert polygon_classes(rec(POLY_TYPE="W", CT="02", SA="98", FA="10")) == (0, 0, 0)  # CIS


@pytest.mark.parametrize("ca", ["-9", None, "  "])
def test_ca_missing_takes_ct(ca: str | None) -> None:
    assert polygon_classes(rec(CT="50", CA=ca, SA="87", FA="04")) == (5, 3, 3)


@pytest.mark.parametrize("ct", ["-9", "99", None])
def test_ct_unknown_masks_everything(ct: str | None) -> None:
    assert polygon_classes(rec(CT=ct, SA="87", FA="04")) == (FILL, FILL, FILL)


def test_unpadded_codes_equal_padded() -> None:
    a = polygon_classes(rec(CT="91", SA="95", FA="5 "))
    b = polygon_classes(rec(CT="91", SA="95", FA="05"))
    assert a == b == (10, 5, 4)


def test_omitted_partials_dmi_style() -> None:
    # DMI: CA/CB/CC all -9, stages SA/SB/SC and forms given: the thickest takes all of CT.
    r = rec(CT="91", SA="95", SB="87", SC="83", FA="5 ", FB="4 ", FC="3 ")
    assert polygon_classes(r) == (10, 5, 4)


@pytest.mark.parametrize(
    "mode, sic", [("mask", FILL), ("low", 4), ("mid", 5), ("high", 6)]
)
def test_range_codes(mode: str, sic: int) -> None:
    # SOD/FLOE do not depend on where CT lies in 4-6/10 (CA = CT): kept even with "mask".
    assert polygon_classes(rec(CT="46", SA="87", FA="04"), range_codes=mode) == (sic, 3, 3)


def test_range_code_mid_rounds_half_up_and_unknown_mode() -> None:
    assert polygon_classes(rec(CT="79", SA="87"), range_codes="mid")[0] == 8
    assert polygon_classes(rec(CT="45", SA="87"), range_codes="mid")[0] == 5
    with pytest.raises(ValueError):
        polygon_classes(rec(CT="46"), range_codes="middle")


def test_range_code_mask_when_dominance_depends_on_ct() -> None:
    # CA 40 of CT 4..6: 4/4 = 1 dominant at the low end, 4/6 = 0.67 at the high end -> same;
    # CA 40 of CT 6..9: 0.67 vs 0.44 -> differs: masked.
    assert polygon_classes(rec(CT="46", CA="40", SA="87", CB="20", SB="93"))[1] == 3
    assert polygon_classes(rec(CT="69", CA="40", SA="87", CB="20", SB="93"))[1] == FILL
    assert polygon_classes(rec(CT="69", CA="40", SA="87", CB="20", SB="93"), range_codes="low")[1] == 3


def test_partials_summed_per_class_and_dominance() -> None:
    # 83 and 84 are both "young ice" (class 2): 4 + 3 = 7 of 9 tenths = 0.78 >= 0.65.
    r = rec(CT="90", CA="40", SA="83", CB="30", SB="84", CC="20", SC="87")
    assert polygon_classes(r)[1] == 2
    # 5 of 9 = 0.56 < 0.65: no dominant stage.
    assert polygon_classes(rec(CT="90", CA="50", SA="87", CB="40", SB="93"))[1] == FILL


def test_floe_mask_codes_and_undetermined_stage() -> None:
    assert polygon_classes(rec(CT="92", SA="95", FA="08"))[2] == FILL  # fast ice
    assert polygon_classes(rec(CT="92", CA="60", SA="95", FA="06", CB="30", SB="87", FB="08"))[2] == FILL
    assert polygon_classes(rec(CT="92", SA="99", FA="99"))[1:] == (FILL, FILL)
    assert polygon_classes(rec(CT="92", SA="98"))[1] == FILL  # bergs / glacier ice


def test_ice_free_forces_zero() -> None:
    assert polygon_classes(rec(CT="01", SA="98", FA="10")) == (0, 0, 0)
    assert polygon_classes(rec(CT="00")) == (0, 0, 0)


def test_nic_icecode_and_extra_fields_and_case() -> None:
    assert polygon_classes({"ICECODE": "CT99", "ORIG_FID": 1}) == (FILL, FILL, FILL)
    extra = rec(CT="92", SA="95", FA="06")
    extra.update({"E_CT": "9+", "E_SA": "7.", "N_CT": "9.7", "R_CT": None, "PNT_TYPE": "106"})
    assert polygon_classes(extra) == (10, 5, 5)
    assert polygon_classes({k.lower(): v for k, v in extra.items()}) == (10, 5, 5)


def test_to_code_round_trip() -> None:
    for sic, code in TO_CODE["SIC"].items():
        for sod, scode in TO_CODE["SOD"].items():
            got = polygon_classes(rec(CT=f"{code:02d}", SA=f"{scode:02d}", FA="06"))
            assert got[0] == sic
            assert got[1] == (0 if sic == 0 else sod)


# --- geometry fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Geometry]:
    ds = make_scene((120, 110), seed=4, center=(75.0, -40.0))
    path = tmp_path_factory.mktemp("s3") / f"{ds.attrs['scene_id'][:19]}_prep.nc"
    write_scene(ds, path)
    return path, Geometry.from_attrs((120, 110), ds.attrs)


def pix_to_3413(geom: Geometry, r: float, c: float) -> tuple[float, float]:
    """Pixel (row, col) corner position on the EPSG:3413 plane (synth's exact geometry)."""
    fwd = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True)
    x0, y0 = fwd.transform(geom.center_lon, geom.center_lat)
    rr = r - 0.5 - (geom.shape[0] - 1) / 2.0
    cc = c - 0.5 - (geom.shape[1] - 1) / 2.0
    th = np.radians(geom.heading_deg)
    return (
        x0 + PIXEL_SPACING * (cc * np.cos(th) + rr * np.sin(th)),
        y0 + PIXEL_SPACING * (cc * np.sin(th) - rr * np.cos(th)),
    )


def pix_poly(geom: Geometry, ring: list[tuple[float, float]], holes: list | None = None) -> Polygon:
    shell = [pix_to_3413(geom, r, c) for r, c in ring]
    hs = [[pix_to_3413(geom, r, c) for r, c in h] for h in holes or []]
    return Polygon(shell, hs)


def write_chart(path: Path, polys: list, records: list[dict], crs: str = "EPSG:3413", driver: str = "ESRI Shapefile") -> Path:
    schema = {"geometry": "Polygon", "properties": {k: "str:2" for k in FIELDS}}
    with fiona.open(path, "w", driver=driver, crs=crs, schema=schema) as dst:
        for g, r in zip(polys, records, strict=True):
            dst.write({"geometry": mapping(g), "properties": {k: r.get(k) for k in FIELDS}})
    return path


def rect(r0: float, c0: float, r1: float, c1: float) -> list[tuple[float, float]]:
    return [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]


def test_rasterise_fixture_holes_land_water_outside_bowtie(
    tmp_path: Path, scene_file: tuple[Path, Geometry]
) -> None:
    path, geom = scene_file
    ice = pix_poly(geom, rect(0, 0, 60, 100), holes=[rect(10, 10, 30, 30)])
    # A self-intersecting (bowtie) water ring: triangles on the left (col 0) and right (col 54)
    # sides meeting at (90, 27).
    bowtie = pix_poly(geom, [(60, 0), (120, 54), (60, 54), (120, 0)])
    assert not bowtie.is_valid
    land = pix_poly(geom, rect(60, 55, 120, 110))
    chart = write_chart(
        tmp_path / "fixture.shp",
        [ice, bowtie, land],
        [rec(CT="92", SA="95", FA="06"), rec(POLY_TYPE="W"), {"POLY_TYPE": "L"}],
    )
    with open_scene(path, require_valid=False) as scene:
        out = rasterise_chart(chart, scene, step=1, mask_invalid=False)
    sic, sod = out["SIC"], out["SOD"]
    assert sic.shape == (120, 110) and sic.dtype == np.uint8
    assert sic[5, 50] == 10 and sod[5, 50] == 5 and out["FLOE"][5, 50] == 5
    assert sic[20, 20] == FILL  # hole
    assert sic[30, 105] == FILL  # outside every polygon
    assert sic[90, 80] == FILL and sod[90, 80] == FILL  # land
    assert sic[90, 5] == 0 and sic[90, 50] == 0  # both bowtie triangles: water
    assert sic[66, 27] == FILL and sic[114, 27] == FILL  # above/below the crossing: outside
    assert out["FLOE"][90, 5] == 0 and out["SOD"][90, 50] == 0


def test_rasterise_masks_invalid_sar(tmp_path: Path, scene_file: tuple[Path, Geometry]) -> None:
    path, geom = scene_file
    chart = write_chart(tmp_path / "all.shp", [pix_poly(geom, rect(-5, -5, 125, 115))], [rec(CT="92", SA="95", FA="06")])
    with open_scene(path, require_valid=False) as scene:
        out = rasterise_chart(chart, scene)
        valid = scene.valid()
    assert (out["SIC"][valid] == 10).all()
    assert (out["SIC"][~valid] == FILL).all()


def test_geopackage_in_lonlat(tmp_path: Path, scene_file: tuple[Path, Geometry]) -> None:
    path, geom = scene_file
    to_ll = Transformer.from_crs("EPSG:3413", "EPSG:4326", always_xy=True)
    poly = shapely.segmentize(pix_poly(geom, rect(-5, -5, 125, 115)), 500.0)
    ll = shapely.transform(poly, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
    chart = write_chart(tmp_path / "c.gpkg", [ll], [rec(CT="70", SA="87", FA="04")], crs="EPSG:4326", driver="GPKG")
    with open_scene(path, require_valid=False) as scene:
        out = rasterise_chart(chart, scene, mask_invalid=False)
    assert (out["SIC"] == 7).all() and (out["SOD"] == 3).all() and (out["FLOE"] == 3).all()


def test_antimeridian_lonlat_chart(tmp_path: Path) -> None:
    ds = make_scene((100, 100), seed=2, center=(72.0, 180.0))
    path = tmp_path / f"{ds.attrs['scene_id'][:19]}_prep.nc"
    write_scene(ds, path)
    west = box(170.0, 70.0, 180.0, 74.0)  # split at the antimeridian, as NIC's polygons are
    east = box(-180.0, 70.0, -170.0, 74.0)
    chart = write_chart(
        tmp_path / "am.shp", [west, east], [rec(CT="92", SA="95"), rec(CT="50", SA="87")], crs="EPSG:4326"
    )
    with open_scene(path, require_valid=False) as scene:
        out = rasterise_chart(chart, scene, step=1, mask_invalid=False)
        _, lon = scene.latlon()
    assert (out["SIC"] != FILL).all()
    assert (out["SIC"][lon > 0.01] == 10).all()
    assert (out["SIC"][lon < -0.01] == 5).all()


def test_no_labelled_pixels(tmp_path: Path, scene_file: tuple[Path, Geometry]) -> None:
    path, geom = scene_file
    whole = pix_poly(geom, rect(-5, -5, 125, 115))
    nic = write_chart(tmp_path / "nic.shp", [whole], [rec(CT="99")])
    far = write_chart(tmp_path / "far.shp", [box(0, 0, 1000, 1000)], [rec(CT="92")])
    with open_scene(path, require_valid=False) as scene:
        for chart in (nic, far):
            with pytest.raises(BadDataError, match="no labelled pixels"):
                rasterise_chart(chart, scene)


def test_chart_without_crs_or_unreadable(tmp_path: Path, scene_file: tuple[Path, Geometry]) -> None:
    path, geom = scene_file
    chart = write_chart(tmp_path / "nocrs.shp", [pix_poly(geom, rect(0, 0, 50, 50))], [rec(CT="92")])
    chart.with_suffix(".prj").unlink()
    with pytest.raises(BadDataError, match="no CRS"):
        read_chart(chart)
    junk = tmp_path / "junk.shp"
    junk.write_bytes(b"not a shapefile")
    with pytest.raises(BadDataError, match="not a readable SIGRID-3 chart"):
        read_chart(junk)


def test_round_trip_polygonised_labels_score_about_100(tmp_path: Path) -> None:
    """Labels -> polygons (SIGRID-3 codes, EPSG:3413) -> rasterised back -> scored."""
    from affine import Affine
    from rasterio import features

    ds = make_scene((150, 140), seed=8, center=(71.0, -60.0))
    geom = Geometry.from_attrs((150, 140), ds.attrs)
    path = tmp_path / f"{ds.attrs['scene_id'][:19]}_prep.nc"
    write_scene(ds, path)
    labels = {c: ds[c].values for c in ("SIC", "SOD", "FLOE")}
    key = labels["SIC"].astype(np.int32) * 100 + labels["SOD"].astype(np.int32) * 10 + labels["FLOE"]
    key[labels["SIC"] == FILL] = -1
    # Pixel (row, col) corner -> EPSG:3413: an exact affine for synth's rotated grid.
    x0, y0 = pix_to_3413(geom, 0, 0)
    x1, y1 = pix_to_3413(geom, 0, 1)
    x2, y2 = pix_to_3413(geom, 1, 0)
    aff = Affine(x1 - x0, x2 - x0, x0, y1 - y0, y2 - y0, y0)
    polys, recs = [], []
    for g, v in features.shapes(key.astype(np.int32), transform=aff):
        if v < 0:
            continue
        v = int(v)
        sic, sod, floe = v // 100, (v // 10) % 10, v % 10
        polys.append(shapely.geometry.shape(g))
        recs.append(rec(CT=f"{TO_CODE['SIC'][sic]:02d}", SA=f"{TO_CODE['SOD'][sod]:02d}", FA=f"{TO_CODE['FLOE'][floe]:02d}"))
    chart = write_chart(tmp_path / "rt.shp", polys, recs)
    with open_scene(path) as scene:
        out = rasterise_chart(chart, scene, step=1)
    res = score_arrays(labels, out)
    assert res.scores["SIC"] > 97 and res.scores["SOD"] > 97 and res.scores["FLOE"] > 97
    agree = float((out["SIC"] == labels["SIC"]).mean())
    assert agree > 0.97


# --- real charts from ../shared ---------------------------------------------------------------
REAL = {
    "cis_20210906": "06092021_CEXPRWA.shp",
    "cis_20201102": "cis_SGRDREA_20201102T.gpkg",
    "cis_undated-eastcoast": "shapefile.shp",
    "dmi_20150426": "201504261200_Greenland_WA.shp",
}


def _real(name: str) -> Path:
    p = SIGRID_DIR / name
    if not p.exists():
        pytest.skip(f"real SIGRID-3 charts not found at {SIGRID_DIR} (set ICECHART_SIGRID_DIR)")
    return p


def _centre_on_boundary(geoms: list, records: list, crs: CRS) -> tuple[float, float]:
    """A point on the boundary of a large ice polygon where several class triples meet."""
    radius = 0.03 if crs.is_geographic else 5000.0
    ice = sorted(
        (g for g, r in zip(geoms, records, strict=True) if polygon_classes(r)[0] not in (0, FILL)),
        key=lambda g: -g.area,
    )
    for poly in ice[:10]:
        ring = poly.exterior if poly.geom_type == "Polygon" else max(poly.geoms, key=lambda p: p.area).exterior
        for f in np.linspace(0.05, 0.95, 19):
            p = ring.interpolate(f, normalized=True)
            near = p.buffer(radius)
            triples = {polygon_classes(r) for g, r in zip(geoms, records, strict=True) if g.intersects(near)}
            if len(triples) >= 2:
                lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(p.x, p.y)
                return float(lat), float(lon)
    raise AssertionError("no boundary between classes found")


@pytest.mark.parametrize("folder", sorted(REAL))
def test_real_chart_on_synthetic_scene(tmp_path: Path, folder: str) -> None:
    chart = _real(f"{folder}/{REAL[folder]}")
    geoms, records, crs = read_chart(chart)
    lat, lon = _centre_on_boundary(geoms, records, crs)
    ds = make_scene((300, 300), seed=3, center=(lat, lon))
    path = tmp_path / f"{ds.attrs['scene_id'][:19]}_prep.nc"
    write_scene(ds, path)
    with open_scene(path, require_valid=False) as scene:
        out = rasterise_chart(chart, scene, mask_invalid=False)
        # Footprint of the scene (pixel centres' hull, densified) in the chart CRS.
        n = 300
        edge = np.linspace(0, n - 1, 31)
        ring_rc = [(0.0, c) for c in edge] + [(r, n - 1.0) for r in edge[1:]]
        ring_rc += [(n - 1.0, c) for c in edge[::-1][1:]] + [(r, 0.0) for r in edge[::-1][1:]]
        la, lo = scene.latlon(rows=np.array([r for r, _ in ring_rc]), cols=np.array([c for _, c in ring_rc]))
        la, lo = np.diagonal(la), np.diagonal(lo)
    fx, fy = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lo, la)
    footprint = Polygon(np.column_stack([fx, fy]))
    ea = CRS.from_proj4(f"+proj=laea +lat_0={lat} +lon_0={lon} +datum=WGS84")
    to_ea = Transformer.from_crs(crs, ea, always_xy=True)
    fp_area = shapely.transform(footprint, lambda xy: np.column_stack(to_ea.transform(xy[:, 0], xy[:, 1]))).area
    expected: dict[tuple[int, int, int], float] = {}
    for g, r in zip(geoms, records, strict=True):
        if not g.intersects(footprint):
            continue
        part = g.intersection(footprint)
        a = shapely.transform(part, lambda xy: np.column_stack(to_ea.transform(xy[:, 0], xy[:, 1]))).area
        t = polygon_classes(r)
        expected[t] = expected.get(t, 0.0) + a / fp_area
    none = (FILL, FILL, FILL)
    expected[none] = expected.get(none, 0.0) + max(0.0, 1.0 - sum(expected.values()))
    trip = np.stack([out["SIC"], out["SOD"], out["FLOE"]], axis=-1).reshape(-1, 3)
    keys, counts = np.unique(trip, axis=0, return_counts=True)
    got = {tuple(int(v) for v in k): c / trip.shape[0] for k, c in zip(keys, counts, strict=True)}
    # Class histogram (areas in an equal-area CRS) within 3 percentage points.
    for k in set(expected) | set(got):
        assert abs(expected.get(k, 0.0) - got.get(k, 0.0)) < 0.03, (k, expected, got)
    assert len([k for k in got if got[k] > 0.01]) >= 2  # a boundary: several classes
    # Land / no-data polygons -> 255 and water -> 0 are covered by polygon_classes; check the
    # codes reached the raster: every labelled pixel's triple is one of the chart's triples.
    triples = {polygon_classes(r) for r in records}
    seen = set(zip(out["SIC"].ravel().tolist(), out["SOD"].ravel().tolist(), out["FLOE"].ravel().tolist()))
    assert seen <= triples | {(FILL, FILL, FILL)}
    res = score_arrays(out, {c: a.copy() for c, a in out.items()}) if (out["SOD"] != FILL).any() and (out["FLOE"] != FILL).any() else score_arrays({"SIC": out["SIC"]}, {"SIC": out["SIC"].copy()})
    assert res.scores["combined"] == 100.0


def test_real_chart_land_and_water_polygons() -> None:
    chart = _real("cis_20210906/06092021_CEXPRWA.shp")
    _, records, _ = read_chart(chart)
    types = {str(r["POLY_TYPE"]).strip(): polygon_classes(r) for r in records}
    assert types["L"] == (FILL, FILL, FILL)
    assert types["W"] == (0, 0, 0)


@pytest.mark.parametrize("folder", sorted(REAL) + ["nic_20160605"])
def test_every_real_chart_loads(folder: str) -> None:
    d = _real(folder)
    files = sorted(d.glob("*.shp")) + sorted(d.glob("*.gpkg"))
    geoms, records, _ = read_chart(files[0])
    assert all(g.is_valid for g in geoms)
    assert len({polygon_classes(r, range_codes=m) for r in records for m in ("mask", "mid")}) >= 1


def test_real_nic_extent_file_refused(tmp_path: Path) -> None:
    chart = _real("nic_20160605/nic_autoc2016157n_pl_a.shp")
    geoms, _, _ = read_chart(chart)
    c = max(geoms, key=lambda g: g.area).representative_point()
    ds = make_scene((100, 100), seed=1, center=(c.y, c.x))
    path = tmp_path / f"{ds.attrs['scene_id'][:19]}_prep.nc"
    write_scene(ds, path)
    with open_scene(path, require_valid=False) as scene:
        with pytest.raises(BadDataError, match="no labelled pixels"):
            rasterise_chart(chart, scene)
