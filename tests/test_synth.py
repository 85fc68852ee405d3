"""Synthetic scenes: AI4Arctic layout, consistent charts, and a learnable signal."""

from __future__ import annotations

import numpy as np
import pytest

from icechart.classes import FILL
from icechart.io import contract as C
from icechart.synth import make_scene


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


def test_learnable_signal(ds):
    """Each chart is visible in the inputs as documented in icechart.synth."""
    hh, hv = ds[C.PRIMARY].values, ds[C.SECONDARY].values
    sic, sod, floe = (ds[v].values.astype(int) for v in ("SIC", "SOD", "FLOE"))
    inc = ds["sar_incidenceangle"].values
    ok = (sic != FILL) & np.isfinite(hh)
    s = sic[ok] / 10.0
    hh_resid = hh[ok] + 1.0 + 0.03 * (inc[ok] - 33) - s * 0.45 * sod[ok]
    hv_resid = hv[ok] + 1.2 - 1.4 * s - 0.12 * floe[ok]
    assert abs(hh_resid.mean()) < 0.05 and 0.3 < hh_resid.std() < 0.4
    assert abs(hv_resid.mean()) < 0.05 and 0.25 < hv_resid.std() < 0.35
    # AMSR2 rises with concentration
    tb = ds["btemp_18_7h"].values
    assert np.corrcoef(tb.ravel(), ds["t2m"].values.ravel())[0, 1] < 0  # colder over ice, warmer Tb


def test_seeded_and_distinct():
    a = make_scene((64, 64), seed=3)
    b = make_scene((64, 64), seed=3)
    c = make_scene((64, 64), seed=4)
    np.testing.assert_array_equal(a["SIC"].values, b["SIC"].values)
    assert a.attrs["scene_id"] == b.attrs["scene_id"]
    assert not np.array_equal(a[C.SECONDARY].values, c[C.SECONDARY].values)
