"""Synthetic scenes: AI4Arctic layout, consistent charts, and a learnable signal."""

from __future__ import annotations

import numpy as np
import pytest

from icechart.classes import FILL
from icechart.io import contract as C
from icechart.synth import SCALING, Physics, make_scene


@pytest.fixture(scope="module")
def ds():
    return make_scene((401, 377), seed=5)


def test_layout(ds):
    assert ds[C.PRIMARY].dims == C.SAR_DIMS
    assert ds[C.LAT].dims == (C.TIE_DIMS[1], C.TIE_DIMS[0])  # stored (samples, lines) as real files
    assert ds[C.LAT].shape == (21, 21)
    n_l, n_s = ds.sizes[C.COARSE_DIMS[0]], ds.sizes[C.COARSE_DIMS[1]]
    assert C.coarse_size_ok(n_l, 401) and C.coarse_size_ok(n_s, 377)
    for v in C.DEFAULT_CHANNELS:
        if C.channel_kind(v) != "derived":
            assert v in ds
    assert C.SCENE_ID_RE.match(ds.attrs["scene_id"])
    assert ds.attrs["scene_id"].endswith("_prep.nc")
    for v in ("SIC", "SOD", "FLOE"):
        assert ds[v].dtype == np.uint8


def test_floor_and_ceil_coarse_grids():
    a = make_scene((130, 130), seed=1, coarse_rounding="floor")
    b = make_scene((130, 130), seed=1, coarse_rounding="ceil")
    assert a.sizes[C.COARSE_DIMS[0]] == 5 and b.sizes[C.COARSE_DIMS[0]] == 6


def test_chart_consistency(ds):
    sic, sod, floe = (ds[v].values for v in ("SIC", "SOD", "FLOE"))
    masked = sic == FILL
    np.testing.assert_array_equal(masked, sod == FILL)
    np.testing.assert_array_equal(masked, floe == FILL)
    water = sic == 0
    assert (sod[water] == 0).all() and (floe[water] == 0).all()
    ice = ~masked & ~water
    assert (sod[ice] >= 1).all() and (floe[ice] >= 1).all()
    assert sic[~masked].max() <= 10 and sod[~masked].max() <= 5 and floe[~masked].max() <= 6
    assert len(np.unique(sic[~masked])) >= 3  # several polygons


def test_nan_borders_and_land_are_unlabelled(ds):
    hh = ds[C.PRIMARY].values
    nan = np.isnan(hh)
    assert nan.any() and nan[:, 0].any()
    assert (ds["SIC"].values[nan] == FILL).all()
    land = ds["distance_map"].values == 0
    assert land.any()
    assert (ds["SIC"].values[land & ~nan] == FILL).all()


def _db(ds, name):
    """Stored standard-scaled values back to dB."""
    mu, sd = SCALING[name]
    return ds[name].values.astype(np.float64) * sd + mu


@pytest.fixture(scope="module")
def calm():
    """A scene with fixed physics: wind 7 m/s, 5 looks, no melt."""
    return make_scene((600, 600), seed=12, physics=Physics(wind=7.0, enl=5.0, melt=0.0))


def test_speckle_is_multiplicative_with_the_given_looks(calm):
    """Over open water in a narrow incidence band, linear power has CV^2 = 1 / ENL (gamma)."""
    hh = 10 ** (_db(calm, C.PRIMARY) / 10)
    water = calm["SIC"].values == 0
    ok = water & np.isfinite(hh)
    c0 = int(np.argmax(np.convolve(ok.sum(axis=0), np.ones(40), mode="valid")))
    band = np.zeros_like(water)
    band[:, c0 : c0 + 40] = True
    v = hh[ok & band]
    assert v.size > 2000
    v = v[v < 8 * np.median(v)]  # icebergs are point targets, not speckle
    cv2 = v.var() / v.mean() ** 2
    assert 1 / 5 * 0.85 < cv2 < 1 / 5 * 1.35  # slow wind field and incidence add a little


def test_water_is_wind_roughened_with_an_incidence_slope(calm):
    hh = _db(calm, C.PRIMARY)
    inc = calm["sar_incidenceangle"].values
    water = (calm["SIC"].values == 0) & np.isfinite(hh)
    slope = np.polyfit(inc[water], hh[water], 1)[0]
    assert -0.75 < slope < -0.45  # WATER_SLOPE_DB_PER_DEG HH -0.6 dB/deg
    windy = make_scene((600, 600), seed=12, physics=Physics(wind=15.0, enl=5.0, melt=0.0))
    w2 = _db(windy, C.PRIMARY)
    # 20 log10(15 / 7) = 6.6 dB brighter water (same seed: same chart)
    assert 5.0 < np.nanmean(w2[water]) - np.nanmean(hh[water]) < 8.0
    # HV over water: on the noise floor (NESZ -27 dB +- banding), not far below it
    hv = _db(calm, C.SECONDARY)
    assert -31 < np.nanmedian(hv[water]) < -24


def test_floe_size_is_texture_scale():
    """Lag-1 autocorrelation of HH inside partly ice-covered polygons grows with floe size."""
    ds = make_scene((800, 800), seed=21, physics=Physics(wind=4.0, enl=5.0, melt=0.0))
    hh = _db(ds, C.PRIMARY)
    sic, floe = ds["SIC"].values, ds["FLOE"].values
    part = (sic >= 3) & (sic <= 7) & np.isfinite(hh)
    corr = {}
    for k in (1, 2, 3, 4, 5):
        m = part & (floe == k)
        m = m[:, :-1] & m[:, 1:]
        if m.sum() < 2000:
            continue
        a, b = hh[:, :-1][m], hh[:, 1:][m]
        corr[k] = np.corrcoef(a, b)[0, 1]
    assert len(corr) >= 3, corr
    ks = sorted(corr)
    assert max(corr.values()) > corr[ks[0]] + 0.3, corr
    assert corr[ks[0]] == min(corr.values())  # the smallest floes decorrelate fastest


def test_concentration_in_passive_microwave_and_sar(ds):
    # AMSR2 sees the actual ice fraction of each 2 km cell: correlates with the chart's SIC
    sic = ds["SIC"].values.astype(float)
    sic[sic == FILL] = np.nan
    tb = ds["btemp_18_7h"].values
    kh, kw = tb.shape
    blk = np.full((kh, kw), np.nan)
    for i in range(kh):
        for j in range(kw):
            v = sic[25 * i : 25 * i + 25, 25 * j : 25 * j + 25]
            if np.isfinite(v).mean() > 0.9:
                blk[i, j] = np.nanmean(v)
    ok = np.isfinite(blk)
    assert np.corrcoef(blk[ok], tb[ok])[0, 1] > 0.8
    assert np.corrcoef(tb.ravel(), ds["t2m"].values.ravel())[0, 1] < 0  # colder over ice


def test_icebergs_are_sparse_bright_targets(calm):
    hv = _db(calm, C.SECONDARY)
    water = calm["SIC"].values == 0
    bright = water & (hv > -12)
    assert 0 < bright.sum() < 0.002 * water.sum()


def test_stored_values_are_scaled_db(ds):
    hh = _db(ds, C.PRIMARY)
    # EW GRDM backscatter lies between about -40 and +10 dB
    assert np.nanpercentile(hh, 0.1) > -45 and np.nanpercentile(hh, 99.9) < 12
    assert "dB" in ds[C.PRIMARY].attrs["long_name"]


def test_shift_knobs_change_the_scene():
    a = make_scene((200, 200), seed=3, physics=Physics(incidence=(30.0, 40.0)))
    inc = a["sar_incidenceangle"].values
    assert inc.min() == pytest.approx(30.0) and inc.max() == pytest.approx(40.0)
    assert a.attrs["synth_incidence_deg"] == "30,40"
    from datetime import datetime, timezone

    summer = make_scene((200, 200), seed=3, time=datetime(2021, 7, 10, tzinfo=timezone.utc))
    assert summer.attrs["synth_melt"] == 1.0
    cis = make_scene((200, 200), seed=3, service="cis")
    assert cis.attrs["ice_service"] == "cis"


def test_seeded_and_distinct():
    a = make_scene((64, 64), seed=3)
    b = make_scene((64, 64), seed=3)
    c = make_scene((64, 64), seed=4)
    np.testing.assert_array_equal(a["SIC"].values, b["SIC"].values)
    assert a.attrs["scene_id"] == b.attrs["scene_id"]
    assert not np.array_equal(a[C.SECONDARY].values, c[C.SECONDARY].values)


def test_cli_shift_options(tmp_path):
    import xarray as xr
    from click.testing import CliRunner

    from icechart.cli.main import cli

    r = CliRunner().invoke(cli, ["synth", str(tmp_path / "s"), "--size", "60x50", "--seed", "2", "--wind", "16",
                                 "--incidence", "20,30", "--enl", "4.5", "--melt", "0.5", "--service", "cis"])
    assert r.exit_code == 0, r.output
    (path,) = (tmp_path / "s").glob("*_cis_prep.nc")
    with xr.open_dataset(path) as ds:
        assert ds.attrs["synth_wind_m_s"] == 16.0 and ds.attrs["synth_enl"] == 4.5
        assert ds.attrs["synth_incidence_deg"] == "20,30" and ds.attrs["synth_melt"] == 0.5
    bad = CliRunner().invoke(cli, ["synth", str(tmp_path / "t"), "--incidence", "40,30"])
    assert bad.exit_code == 2 and "NEAR < FAR" in bad.output
