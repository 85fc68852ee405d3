"""Reader: round trip on synthetic scenes, masks, geolocation, and every bad-input path."""

from __future__ import annotations

import numpy as np
import pytest

from icechart.classes import FILL
from icechart.errors import BadDataError, InputMissingError
from icechart.io import contract as C
from icechart.io.scene import open_scene
from icechart.synth import Geometry, exact_latlon, make_scene, write_scene


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    ds = make_scene((1003, 997), seed=11)
    path = tmp_path_factory.mktemp("odd") / "20210315T101010_dmi_prep.nc"
    write_scene(ds, path)
    return ds, path


def test_round_trip_odd_size(odd):
    ds, path = odd
    with open_scene(path, channels=C.DEFAULT_CHANNELS) as sc:
        assert sc.shape == (1003, 997)
        assert sc.coarse_shape in {(40, 39), (41, 40)}
        assert sc.scene_id == C.scene_id_from(ds.attrs["scene_id"], "")
        assert sc.service == "dmi"
        assert sc.has_labels
        hh = ds[C.PRIMARY].values
        np.testing.assert_array_equal(sc.valid(), np.isfinite(hh))
        land_truth = (ds["SIC"].values == FILL) & np.isfinite(hh)
        np.testing.assert_array_equal(sc.land(), land_truth)
        # land is separate from validity: land pixels have valid SAR
        assert sc.land().any() and (~sc.valid()).any()
        assert not (sc.land() & ~sc.valid()).any()


def test_latlon_midway_between_tie_points(odd):
    ds, path = odd
    geom = Geometry.from_attrs((1003, 997), ds.attrs)
    with open_scene(path) as sc:
        _, _, trow, tcol = sc.tie_points()
        rows = (trow[:-1] + trow[1:]) / 2
        cols = (tcol[:-1] + tcol[1:]) / 2
        lat, lon = sc.latlon(rows=rows, cols=cols)
    tlat, tlon = exact_latlon(geom, rows, cols)
    assert np.abs(lat - tlat).max() < 0.01
    dlon = (lon - tlon + 180) % 360 - 180
    assert np.abs(dlon * np.cos(np.radians(tlat))).max() < 0.01


def test_latlon_window_matches_full_grid(odd):
    _, path = odd
    with open_scene(path) as sc:
        full_lat, full_lon = sc.latlon(step=1)
        w = (slice(100, 140), slice(500, 530))
        lat, lon = sc.latlon(w)
    np.testing.assert_allclose(lat, full_lat[w])
    np.testing.assert_allclose(lon, full_lon[w])


@pytest.mark.parametrize("center", [(89.9, 0.0), (71.0, 179.9), (71.0, -179.95)])
def test_latlon_pole_and_antimeridian(tmp_path, center):
    ds = make_scene((300, 280), seed=3, center=center)
    path = tmp_path / "20210315T000000_dmi_prep.nc"
    write_scene(ds, path)
    geom = Geometry.from_attrs((300, 280), ds.attrs)
    rows = np.linspace(0, 299, 37)
    cols = np.linspace(0, 279, 41)
    with open_scene(path) as sc:
        lat, lon = sc.latlon(rows=rows, cols=cols)
    tlat, tlon = exact_latlon(geom, rows, cols)
    assert np.abs(lat - tlat).max() < 0.01
    dlon = (lon - tlon + 180) % 360 - 180
    assert np.abs(dlon * np.cos(np.radians(tlat))).max() < 0.01
    assert np.all(np.abs(lon) <= 180)


def test_tie_point_dim_order_either_way(tmp_path):
    ds = make_scene((90, 80), seed=1)
    a = tmp_path / "20210101T000000_dmi_prep.nc"
    b = tmp_path / "20210101T000001_dmi_prep.nc"
    write_scene(ds, a)
    ds2 = ds.copy()
    for v in (C.LAT, C.LON):
        ds2[v] = ds[v].transpose()
    for v in ("nersc_sar_primary", "SIC"):
        ds2[v] = ds[v].transpose()
    ds2.attrs["scene_id"] = b.name
    write_scene(ds2, b)
    with open_scene(a) as sa, open_scene(b) as sb:
        np.testing.assert_allclose(sa.latlon(step=7)[0], sb.latlon(step=7)[0])
        np.testing.assert_array_equal(sa.read("SIC"), sb.read("SIC"))
        np.testing.assert_array_equal(sa.valid(), sb.valid())


def test_stored_tie_positions_are_used(tmp_path):
    ds = make_scene((90, 80), seed=1)
    geom = Geometry.from_attrs((90, 80), ds.attrs)
    rows = np.linspace(2, 87, 6)
    cols = np.linspace(1, 78, 5)
    lat, lon = exact_latlon(geom, rows, cols)
    ds = ds.drop_vars([C.LAT, C.LON])
    ds[C.LAT] = (C.TIE_DIMS, lat)
    ds[C.LON] = (C.TIE_DIMS, lon)
    ds[C.TIE_LINE] = (C.TIE_DIMS, np.repeat(rows[:, None], 5, axis=1))
    ds[C.TIE_SAMPLE] = (C.TIE_DIMS, np.repeat(cols[None, :], 6, axis=0))
    path = tmp_path / "20210101T000000_dmi_prep.nc"
    write_scene(ds, path)
    # the same file with every tie-point array stored (samples, lines), as the real files do
    ds_t = ds.copy()
    for v in (C.LAT, C.LON, C.TIE_LINE, C.TIE_SAMPLE):
        ds_t[v] = ds[v].transpose()
    path_t = tmp_path / "20210101T000001_dmi_prep.nc"
    write_scene(ds_t, path_t)
    want_lat, _ = exact_latlon(geom, np.array([2.0, 45.0]), np.array([1.0, 40.0]))
    for p in (path, path_t):
        with open_scene(p) as sc:
            np.testing.assert_allclose(sc.tie_points()[2], rows)
            np.testing.assert_allclose(sc.tie_points()[3], cols)
            got_lat, _ = sc.latlon(rows=np.array([2.0, 45.0]), cols=np.array([1.0, 40.0]))
        assert np.abs(got_lat - want_lat).max() < 1e-3


def test_fill_value_is_invalid_and_zero_is_not(tmp_path):
    ds = make_scene((60, 70), seed=2)
    hh = ds[C.PRIMARY].values.copy()
    hh[np.isnan(hh)] = -999.0
    hh[10, 10] = 0.0
    ds[C.PRIMARY] = (C.SAR_DIMS, hh, {"variable_fill_value": -999.0})
    path = tmp_path / "20210101T000000_dmi_prep.nc"
    write_scene(ds, path)
    with open_scene(path) as sc:
        valid = sc.valid()
        assert valid[10, 10]
        assert not valid[hh == -999.0].any()
    with open_scene(path, sar_fill=0.0) as sc:
        assert not sc.valid()[10, 10]


def test_test_file_reports_no_labels(tmp_path):
    ds = make_scene((60, 70), seed=2)
    for v in ("SIC", "SOD", "FLOE"):
        ds[v].values[:] = FILL
    path = tmp_path / "20210101T000000_dmi_prep.nc"
    write_scene(ds, path)
    with open_scene(path) as sc:
        assert not sc.has_labels
    ds2 = make_scene((60, 70), seed=2, labels=False)
    path2 = tmp_path / "20210101T000001_dmi_prep.nc"
    write_scene(ds2, path2)
    with open_scene(path2) as sc:
        assert not sc.has_labels
        with pytest.raises(BadDataError, match="no labels"):
            sc.labels("SIC")
        assert sc.land().any()  # from the distance map


def test_scene_id_from_attr_or_name(tmp_path):
    ds = make_scene((60, 70), seed=2)
    ds.attrs["scene_id"] = "20180707T113313_cis"  # without .nc
    path = tmp_path / "whatever.nc"
    write_scene(ds, path)
    with open_scene(path) as sc:
        assert sc.scene_id == "20180707T113313_cis"
        assert sc.time.year == 2018 and sc.month == 6
        assert sc.service == "dmi"  # from the ice_service attribute
    assert C.scene_id_from(None, "20180707T113313_cis_reference.nc") == "20180707T113313_cis"
    assert C.scene_id_from("S1B_EW_GRDM_1SDH_20180707T113313_20180707T113413", "20190101T000000_dmi_prep.nc") == "20190101T000000_dmi"


def test_extra_variables_are_ignored(tmp_path):
    ds = make_scene((60, 70), seed=2)
    ds["something_else"] = (("foo",), np.arange(3))
    path = tmp_path / "20210101T000000_dmi_prep.nc"
    write_scene(ds, path)
    with open_scene(path, channels=C.DEFAULT_CHANNELS) as sc:
        assert sc.shape == (60, 70)


# --- bad input (library level; the CLI tests are in test_cli_main.py) ----------------------
def test_missing_file(tmp_path):
    with pytest.raises(InputMissingError, match="no such file"):
        open_scene(tmp_path / "nope.nc")


def test_missing_variable_named(tmp_path):
    ds = make_scene((60, 70), seed=2).drop_vars(["btemp_36_5h"])
    path = tmp_path / "20210101T000000_dmi_prep.nc"
    write_scene(ds, path)
    with pytest.raises(BadDataError, match=r"btemp_36_5h.*") as e:
        open_scene(path, channels=C.DEFAULT_CHANNELS)
    assert str(path) in str(e.value)
    open_scene(path, channels=["nersc_sar_primary"]).close()  # fine when not needed


def test_wrong_dims(tmp_path):
    ds = make_scene((60, 70), seed=2)
    ds[C.SECONDARY] = (("a", "b"), ds[C.SECONDARY].values)
    path = tmp_path / "20210101T000000_dmi_prep.nc"
    write_scene(ds, path)
    with pytest.raises(BadDataError, match="dims"):
        open_scene(path)


def test_wrong_coarse_size(tmp_path):
    ds = make_scene((100, 100), seed=2)
    ds = ds.isel({C.COARSE_DIMS[0]: slice(0, 2)})
    path = tmp_path / "20210101T000000_dmi_prep.nc"
    write_scene(ds, path)
    with pytest.raises(BadDataError, match="2 km grid"):
        open_scene(path)


def test_drop_read_caches_reopens_and_close_still_closes(odd):
    """After dropping the read caches (closing the file) reads reopen it transparently, windows of
    the cached masks are unchanged, and close() still closes the reopened file."""
    import os

    ds, path = odd
    sc = open_scene(path, channels=C.DEFAULT_CHANNELS)  # open_scene drops once already
    win = (slice(100, 300), slice(50, 400))
    land, valid, hh = sc.land(win), sc.valid(win), sc.sar(C.PRIMARY, win)
    sc.drop_read_caches()
    np.testing.assert_array_equal(sc.sar(C.PRIMARY, win), hh)  # reopened on demand
    np.testing.assert_array_equal(sc.land(win), land)
    np.testing.assert_array_equal(sc.valid(win), valid)
    np.testing.assert_array_equal(sc.land(win), ((ds["SIC"].values == FILL) & np.isfinite(ds[C.PRIMARY].values))[win])

    def open_fds() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                n += os.readlink(f"/proc/self/fd/{fd}") == str(path.resolve())
            except OSError:
                pass
        return n

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc")
    assert open_fds() >= 1
    sc.close()
    assert open_fds() == 0
