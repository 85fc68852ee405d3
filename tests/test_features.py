"""Features at the downscaled grid: shapes, block means over valid pixels, coarse interpolation,
derived channels, normalisation, row tiling, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from icechart.classes import FILL
from icechart.errors import BadDataError
from icechart.features import (
    block_mode,
    build_features,
    compute_norm,
    downscale_labels,
    downscaled_valid,
    normalise,
    output_shape,
    pixel_centres,
    raw_features,
)
from icechart.io import contract as C
from icechart.io.scene import open_scene
from icechart.synth import make_scene, write_scene


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("feat") / "20210315T101010_dmi_prep.nc"
    write_scene(make_scene((123, 107), seed=3), p)
    return p


def test_shape_and_dtype(scene_path: Path) -> None:
    with open_scene(scene_path) as s:
        x = build_features(s, C.DEFAULT_CHANNELS, factor=10)
    assert x.shape == (16, 13, 11)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()


def test_block_mean_over_valid_pixels(scene_path: Path) -> None:
    with open_scene(scene_path) as s:
        hh = s.sar(C.PRIMARY)
        valid = s.valid()
        x = raw_features(s, [C.PRIMARY], factor=10)[0]
        sub = raw_features(s, [C.PRIMARY], factor=10, method="subsample")[0]
    blk = hh[20:30, 50:60][valid[20:30, 50:60]]
    assert x[2, 5] == pytest.approx(float(blk.mean()), rel=1e-5)
    # the last partial block (rows 120..122, cols 100..106)
    last = hh[120:, 100:][valid[120:, 100:]]
    if last.size:
        assert x[12, 10] == pytest.approx(float(last.mean()), rel=1e-5)
    assert sub[2, 5] == (hh[20, 50] if valid[20, 50] else sub[2, 5])
    # a block with no valid SAR pixel is NaN raw and 0 after normalising
    h2 = hh.copy()
    h2[~valid] = np.nan
    empty = ~downscaled_valid_np(valid, 10)
    assert np.isnan(x[empty]).all()


def downscaled_valid_np(valid: np.ndarray, f: int) -> np.ndarray:
    h, w = valid.shape
    out = np.zeros((-(-h // f), -(-w // f)), bool)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = valid[i * f : i * f + f, j * f : j * f + f].any()
    return out


def test_downscaled_valid(scene_path: Path) -> None:
    with open_scene(scene_path) as s:
        v = downscaled_valid(s, factor=10)
        np.testing.assert_array_equal(v, downscaled_valid_np(s.valid(), 10))
        np.testing.assert_array_equal(downscaled_valid(s, factor=10, rows=slice(4, 9)), v[4:9])


def test_rows_tiling_matches_whole(scene_path: Path) -> None:
    with open_scene(scene_path) as s:
        norm = compute_norm([s], C.DEFAULT_CHANNELS, factor=10)
        whole = build_features(s, C.DEFAULT_CHANNELS, factor=10, norm=norm)
        parts = [
            build_features(s, C.DEFAULT_CHANNELS, factor=10, norm=norm, rows=slice(r, r + 5))
            for r in range(0, 13, 5)
        ]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-6, atol=1e-6)


def test_coarse_interpolation(scene_path: Path) -> None:
    with open_scene(scene_path) as s:
        a = s.coarse("t2m")
        near = raw_features(s, ["t2m"], factor=5, interp="nearest")[0]
        bil = raw_features(s, ["t2m"], factor=5, interp="bilinear")[0]
    # downscaled pixel 2 (factor 5) covers SAR rows 10..14, centre 12: coarse cell 0's centre.
    assert near[2, 2] == a[0, 0]
    assert bil[2, 2] == pytest.approx(a[0, 0], rel=1e-6)
    # centre 37 (pixel 7) lies in cell 1 (rows 25..49), exactly at its centre
    assert near[7, 7] == a[1, 1]
    assert bil[7, 7] == pytest.approx(a[1, 1], rel=1e-6)
    # halfway between cell centres 12 and 37 -> mean (pixel centre 24.5 is not; use a bound)
    lo, hi = sorted([a[0, 0], a[1, 0]])
    assert lo - 1e-3 <= bil[4, 2] <= hi + 1e-3


def test_derived_channels(scene_path: Path) -> None:
    with open_scene(scene_path) as s:
        x = raw_features(s, ["month", "lat", "lon"], factor=10)
        lat, lon = s.latlon(rows=pixel_centres(123, 10), cols=pixel_centres(107, 10))
        m = s.month
    assert np.allclose(x[0], 2 * m / 11 - 1)
    np.testing.assert_allclose(x[1], lat, rtol=1e-6)
    np.testing.assert_allclose(x[2], lon, rtol=1e-6)


def test_normalise_and_compute_norm(scene_path: Path) -> None:
    with open_scene(scene_path) as s:
        norm = compute_norm([s], [C.SECONDARY, "tcwv", "lat"], factor=10)
        x = build_features(s, [C.SECONDARY, "tcwv", "lat"], factor=10, norm=norm)
        v = downscaled_valid(s, factor=10)
    assert abs(float(x[0][v].mean())) < 1e-4
    assert float(x[0][v].std()) == pytest.approx(1.0, rel=1e-3)
    assert norm["mean"][2] == 69.1253  # fixed paper constants for lat
    assert (x[0][~v] == 0).all()
    y = normalise(np.array([[[np.nan, 2.0]]], np.float32), {"mean": [1.0], "std": [2.0]})
    np.testing.assert_array_equal(y, [[[0.0, 0.5]]])


def test_missing_channel_names_scene_and_channel(tmp_path: Path) -> None:
    ds = make_scene((60, 60), seed=1).drop_vars("tclw")
    p = tmp_path / "20210101T000000_dmi_prep.nc"
    write_scene(ds, p)
    with open_scene(p) as s, pytest.raises(BadDataError, match="20210101T000000_dmi.*tclw"):
        build_features(s, C.DEFAULT_CHANNELS)


def test_labels_mode_and_subsample(scene_path: Path) -> None:
    with open_scene(scene_path) as s:
        full = s.labels("SOD")
        mode = downscale_labels(s, "SOD", factor=10)
        sub = downscale_labels(s, "SOD", factor=10, method="subsample")
    assert mode.shape == sub.shape == output_shape((123, 107), 10)
    assert mode.dtype == np.uint8
    np.testing.assert_array_equal(sub, full[::10, ::10])
    vals, counts = np.unique(full[30:40, 40:50], return_counts=True)
    assert mode[3, 4] == vals[np.argmax(counts)]
    assert FILL in mode or FILL not in full


def test_block_mode_partial_blocks() -> None:
    a = np.array([[1, 1, 2], [2, 2, 2], [3, 3, 255]], np.uint8)
    np.testing.assert_array_equal(block_mode(a, 2), [[1, 2], [3, 255]])


@pytest.mark.parametrize("method", ["mean", "subsample"])
def test_column_windows_match_full_width(scene_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Reading the SAR in column windows (large chunked scenes) gives the same stack."""
    import icechart.features as F

    channels = [C.PRIMARY, C.SECONDARY, "distance_map", "month"]
    with open_scene(scene_path) as scene:
        whole = raw_features(scene, channels, factor=10, method=method)
        # windows of whole model cells, the last one partial (117 samples)
        monkeypatch.setattr(F, "_column_windows", lambda s, n, samples, f: [(0, 30), (30, 60), (60, samples)])
        windowed = raw_features(scene, channels, factor=10, method=method)
    np.testing.assert_array_equal(windowed, whole)


def test_texture_stats_known_values() -> None:
    from icechart.features import TEXTURE_HALO, texture_stats

    h = TEXTURE_HALO
    rng = np.random.default_rng(0)
    stats = ["std", "lag1", "lag4", "bright"]
    white = rng.normal(0, 2.0, (200 + 2 * h, 200 + 2 * h)).astype(np.float32)
    st = texture_stats(white, stats, factor=20)
    for k in ("std", "lag1", "lag4"):  # uncorrelated pixels: all three estimate the sd
        assert abs(float(np.nanmean(st[k])) - 2.0) < 0.1, k
    assert 0.4 < float(np.nanmean(st["bright"])) < 0.6
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(rng.normal(0, 1, white.shape), 3).astype(np.float32)
    sm = texture_stats(smooth, stats, factor=20)
    # a correlation length of ~3 pixels: lag-1 differences far below lag-4 ones
    assert float(np.nanmean(sm["lag1"])) < 0.5 * float(np.nanmean(sm["lag4"]))
    const = np.full(white.shape, 1.5, np.float32)
    c = texture_stats(const, stats, factor=20)
    assert np.allclose(c["std"], 0, atol=1e-5) and np.allclose(c["lag1"], 0) and np.allclose(c["bright"], 0)
    # NaN (invalid) pixels are left out; a block with none valid is NaN
    holes = white.copy()
    holes[h : h + 20, h : h + 20] = np.nan
    hs = texture_stats(holes, stats, factor=20)
    assert all(np.isnan(hs[k][0, 0]) for k in stats)
    assert all(np.isfinite(hs[k][1:, 1:]).all() for k in stats)


def test_texture_channels_in_row_bands_equal_whole_scene(scene_path: Path) -> None:
    ch = list(C.TEXTURE_CHANNELS)
    with open_scene(scene_path) as s:
        whole = raw_features(s, ch, factor=10)
        parts = np.concatenate([raw_features(s, ch, factor=10, rows=slice(r, r + 3)) for r in range(0, 13, 3)], axis=1)
    np.testing.assert_array_equal(whole, parts)
    assert whole.shape == (8, 13, 11)


# -- the fast block sums against the straightforward computation they replace ------------------
def _reference_block_sum(v: np.ndarray, f: int) -> np.ndarray:
    h, w = v.shape
    oh, ow = -(-h // f), -(-w // f)
    v = np.pad(v, ((0, oh * f - h), (0, ow * f - w)))
    return v.reshape(oh * f, ow, f).sum(axis=2).reshape(oh, f, ow).sum(axis=1)


def _reference_block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape
    oh, ow = -(-h // f), -(-w // f)
    b = np.pad(a, ((0, oh * f - h), (0, ow * f - w)), constant_values=np.nan).reshape(oh, f, ow, f)
    finite = np.isfinite(b)
    s = np.where(finite, b, 0.0).sum(axis=(1, 3), dtype=np.float64)
    n = finite.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan).astype(np.float32)


def _reference_texture_stats(win: np.ndarray, stats: list[str], *, factor: int, halo: int) -> dict[str, np.ndarray]:
    """The texture statistics written out plainly (numpy reductions, one statistic at a time)."""
    from scipy import ndimage

    bs = _reference_block_sum
    hh, ww = win.shape
    r, w = hh - 2 * halo, ww - 2 * halo
    ok = np.isfinite(win)
    zf = np.where(ok, win, np.float32(0))
    vf = ok.astype(np.float32)
    core = (slice(halo, halo + r), slice(halo, halo + w))
    z, v = zf[core], vf[core]
    n = bs(v, factor)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_n = np.where(n > 0, np.float32(1) / np.maximum(n, np.float32(1)), np.float32(np.nan))
        mean = bs(z, factor) * inv_n
        if "std" in stats:
            out["std"] = np.sqrt(np.maximum(bs(z * z, factor) * inv_n - mean * mean, np.float32(0)))
        for stat, k in (("lag1", 1), ("lag4", 4)):
            if stat in stats:
                sh = (slice(halo, halo + r), slice(halo + k, halo + k + w))
                pair = v * vf[sh]
                d = (zf[sh] - z) ** 2 * pair
                tot, cnt = bs(d, factor), bs(pair, factor)
                out[stat] = np.where(cnt > 0, np.sqrt(tot / np.maximum(cnt, np.float32(1)) / np.float32(2)), np.float32(np.nan))
        if "bright" in stats:
            part = (slice(halo - 1, halo + r + 1), slice(halo - 1, halo + w + 1))
            s3 = ndimage.uniform_filter(zf[part], 3, mode="constant")[1:-1, 1:-1]
            c3 = np.maximum(ndimage.uniform_filter(vf[part], 3, mode="constant")[1:-1, 1:-1], np.float32(1e-6))
            m3 = s3 / c3
            oh, ow = n.shape
            big = np.repeat(np.repeat(np.nan_to_num(mean, nan=np.inf), factor, 0), factor, 1)[:r, :w]
            out["bright"] = bs(((m3 > big) & ok[core]).astype(np.float32), factor) * inv_n
    return {k: a.astype(np.float32) for k, a in out.items()}


@pytest.mark.parametrize("factor", [1, 2, 5, 7, 8, 10, 20, 130])
@pytest.mark.parametrize("shape", [(40, 60), (37, 53), (3, 200)])
def test_fast_block_sums_equal_numpy_reductions(factor: int, shape: tuple[int, int]) -> None:
    from icechart.features import _block_reduce_mean, _block_sum

    rng = np.random.default_rng(factor * 1000 + shape[0])
    # magnitudes over 12 orders of ten: any change of summation order shows in float32
    v = (rng.standard_normal(shape) * np.exp(rng.uniform(-14, 14, shape))).astype(np.float32)
    np.testing.assert_array_equal(_block_sum(v, factor), _reference_block_sum(v, factor))
    a = v.copy()
    a[rng.random(shape) < 0.3] = np.nan
    a[:, : min(factor, shape[1])] = np.nan  # some blocks without a valid pixel
    np.testing.assert_array_equal(_block_reduce_mean(a, factor), _reference_block_mean(a, factor))


@pytest.mark.parametrize("factor", [5, 10])
def test_texture_stats_equal_reference(factor: int) -> None:
    from icechart.features import TEXTURE_HALO, texture_stats

    rng = np.random.default_rng(factor)
    h = TEXTURE_HALO
    win = (rng.gamma(1.0, 1.0, (3 * factor + 2 + 2 * h, 11 * factor + 3 + 2 * h)) * 3 - 1).astype(np.float32)
    win[rng.random(win.shape) < 0.1] = np.nan
    win[:h] = np.nan  # beyond the image
    stats = ["std", "lag1", "lag4", "bright"]
    fast = texture_stats(win, stats, factor=factor, halo=h)
    ref = _reference_texture_stats(win, stats, factor=factor, halo=h)
    assert fast.keys() == ref.keys()
    for k in stats:
        np.testing.assert_array_equal(fast[k], ref[k], err_msg=k)
    one = texture_stats(win, ["lag4"], factor=factor, halo=h)
    assert list(one) == ["lag4"]
    np.testing.assert_array_equal(one["lag4"], ref["lag4"])
