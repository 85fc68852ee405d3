"""Input features at the downscaled grid: scene -> normalised float32 stack (no torch).

The MMSeaIce method (reference/method.md) reduces SAR, distance map and labels by a factor
(10: 80 m -> 800 m) and interpolates the coarse AMSR2/ERA5 variables onto the same grid. The
stack is built *directly* at the reduced resolution, row block by row block, so the full
resolution 16-channel stack never exists (the reference builds it in float64: ~6 GB a scene).

Grid conventions
----------------
Downscaled pixel ``(i, j)`` covers SAR rows ``[f*i, f*i + f)`` and columns ``[f*j, f*j + f)``
(the last block may be partial); the grid is ``ceil(lines/f) x ceil(samples/f)``.

* ``method="mean"``: SAR-like channels are averaged over the *valid* pixels of each block
  (invalid SAR -> NaN, excluded); the pixel centre is the centre of the (partial) block.
* ``method="subsample"``: one pixel per block, the first (as the reference's ``[::f]``); the
  pixel centre is that pixel.
* Coarse AMSR2/ERA5 cell ``k`` covers SAR rows ``[25k, 25k + 25)`` (contract.md), so its
  centre lies at SAR position ``25k + 12``; values are interpolated (bilinear, or nearest cell)
  at the downscaled pixel centres, clamped at the edges.
* ``month`` = ``2m/11 - 1`` for m = 0..11; ``lat``/``lon`` from the tie points at the pixel
  centres (paper; method.md).

Texture channels
----------------
A block mean keeps only the first moment of the 80 m pixels below each downscaled pixel. Sea
ice information lives below the block too: concentration is the fraction of ice pixels among
water pixels, floe size the correlation length of the bright/dark pattern. The texture
channels (:data:`icechart.io.contract.TEXTURE_CHANNELS`, ``hh_*`` from HH and ``hv_*`` from HV)
are block statistics computed from the full-resolution (scaled dB) values ``x`` of valid
pixels, whatever the downscaling method:

* ``*_std``: standard deviation of ``x`` in the block. Speckle alone gives a floor (about
  2.2 dB at 5 looks); a mixture of ice and water adds ``c (1 - c) (contrast)^2``: it peaks at
  intermediate concentration.
* ``*_lag1``, ``*_lag4``: ``sqrt(D(k) / 2)`` with ``D(k)`` the mean of ``(x[r, c + k] - x[r, c])^2``
  over the block's pixels (partners may lie in the next block; along the line only: floes and
  speckle are isotropic, and one direction halves the cost). For uncorrelated pixels ``sqrt(D(k)/2)`` equals the standard deviation; a pattern with
  a correlation length above k pixels lowers it. ``lag1`` against ``lag4`` and ``std`` is a
  two-scale estimate of the texture scale (the structure function; floe size).
* ``*_bright``: fraction of the block's pixels whose 3 x 3 mean (speckle reduced 9-fold in
  variance) exceeds the block mean: the share of the brighter phase (ice, or wind-roughened
  water) of a two-phase mixture.

Full-resolution windows are read with a halo of :data:`TEXTURE_HALO` pixels (NaN beyond the
image), so row bands and column windows give exactly the values of a whole-scene pass: training
(the cache), validation and prediction share one result.

The same code serves training (via the cache), validation and prediction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from icechart.classes import FILL
from icechart.errors import BadDataError
from icechart.io import contract as C
from icechart.io.scene import Scene

logger = logging.getLogger(__name__)

Method = Literal["mean", "subsample"]
Interp = Literal["bilinear", "nearest"]
LabelMethod = Literal["mode", "subsample"]

# Fixed standardisation of the derived channels (method.md: lat mean 69.1253 sd 7.0318, lon mean
# -56.3897 sd 31.3294, from the MMSeaIce reference over the AI4Arctic training set; month is
# already encoded in [-1, 1]). compute_norm uses these rather than per-dataset statistics.
FIXED_NORM: dict[str, tuple[float, float]] = {
    "month": (0.0, 1.0),
    "lat": (69.1253, 7.0318),
    "lon": (-56.3897, 31.3294),
}

_BLOCK_OUT_ROWS = 32  # downscaled rows produced per block (x factor SAR rows read at once)
TEXTURE_HALO = 4
"""Full-resolution pixels read beyond a window for the texture channels (lag 4)."""


def output_shape(shape: tuple[int, int], factor: int) -> tuple[int, int]:
    """Downscaled grid size ``(ceil(lines/f), ceil(samples/f))``."""
    return (-(-int(shape[0]) // factor), -(-int(shape[1]) // factor))


def pixel_centres(n: int, factor: int, method: Method = "mean") -> np.ndarray:
    """SAR positions (fractional, float64) of the ``ceil(n/factor)`` downscaled pixel centres."""
    starts = np.arange(0, n, factor, dtype=np.float64)
    if method == "subsample":
        return starts
    ends = np.minimum(starts + factor, n)
    return (starts + ends - 1.0) / 2.0


def _row_range(rows: slice | None, n_out: int) -> tuple[int, int]:
    if rows is None:
        return 0, n_out
    start, stop, step = rows.indices(n_out)
    if step != 1:
        raise ValueError("rows must be a contiguous slice (step 1)")
    return start, max(start, stop)


def _block_reduce_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """NaN-aware mean over ``factor x factor`` blocks (partial blocks at the end included).

    The sums are float64 (:func:`_block_sum64`): a sum of float32 values in float64 is exact
    in any order unless their exponents span more than ~24 binary orders, so this equals the
    straightforward ``reshape(...).sum(axis=(1, 3), dtype=float64)`` (kept in
    tests/test_features.py as the reference).
    """
    finite = np.isfinite(a)
    s = _block_sum64(np.where(finite, a, np.float32(0)), factor)
    n = _block_sum(finite.view(np.uint8), factor)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    return out.astype(np.float32)


def _padded(v: np.ndarray, factor: int) -> np.ndarray:
    """``v`` padded with 0 to whole ``factor x factor`` blocks (itself when already whole)."""
    h, w = v.shape
    oh, ow = -(-h // factor), -(-w // factor)
    if oh * factor != h or ow * factor != w:
        v = np.pad(v, ((0, oh * factor - h), (0, ow * factor - w)))
    return v


def _sum_columns(cols: list[np.ndarray], dtype: Any) -> np.ndarray:
    """Elementwise sum of ``cols`` in the order numpy's ``add.reduce`` takes along a short
    contiguous axis: sequential below 8 terms, its 8-way pairwise blocks from 8 to 128 terms
    (``pairwise_sum`` in numpy's loops), so float32 results are bit-identical."""
    n = len(cols)
    if n < 8:
        s = cols[0].astype(dtype, copy=True)
        for c in cols[1:]:
            s += c
        return s
    r = [c.astype(dtype, copy=True) for c in cols[:8]]
    i = 8
    while i < n - n % 8:
        for j in range(8):
            r[j] += cols[i + j]
        i += 8
    r[0] += r[1]
    r[2] += r[3]
    r[4] += r[5]
    r[6] += r[7]
    r[0] += r[2]
    r[4] += r[6]
    r[0] += r[4]
    for c in cols[i:]:
        r[0] += c
    return r[0]


def _sum_rows(s: np.ndarray, factor: int) -> np.ndarray:
    """Sums of each ``factor`` consecutive rows, added in row order (as numpy reduces an outer axis)."""
    t = s[0::factor].copy()
    for i in range(1, factor):
        t += s[i::factor]
    return t


def _block_sum(v: np.ndarray, factor: int) -> np.ndarray:
    """Sum over ``factor x factor`` blocks (partial edge blocks padded with 0); float32 (a block
    holds at most a few hundred values of order 1: float32 sums are exact enough).

    Bit-identical to ``v.reshape(oh * f, ow, f).sum(axis=2).reshape(oh, f, ow).sum(axis=1)``
    (the straightforward form, kept in tests/test_features.py), but made of whole-array
    additions of strided views: numpy's reduction over a 5-long axis is ~6x slower.
    """
    p = _padded(v, factor)
    if factor > 128:  # numpy's pairwise sum recurses beyond 128 terms: use the reduction itself
        oh, ow = p.shape[0] // factor, p.shape[1] // factor
        q = p.astype(np.float32, copy=False)
        return q.reshape(oh * factor, ow, factor).sum(axis=2).reshape(oh, factor, ow).sum(axis=1)
    return _sum_rows(_sum_columns([p[:, j::factor] for j in range(factor)], np.float32), factor)


def _block_sum64(v: np.ndarray, factor: int) -> np.ndarray:
    """float64 block sums of float32 values (exact in any order, see :func:`_block_reduce_mean`)."""
    p = _padded(v, factor)
    s = p[:, 0::factor].astype(np.float64)
    for j in range(1, factor):
        s += p[:, j::factor]
    return _sum_rows(s, factor)


def texture_stats(
    win: np.ndarray, stats: Sequence[str], *, factor: int, halo: int = TEXTURE_HALO
) -> dict[str, np.ndarray]:
    """Block statistics (module docstring, "Texture channels") of one full-resolution window.

    Parameters
    ----------
    win
        float32 values with NaN at invalid pixels, including ``halo`` pixels on every side
        (NaN where beyond the image); the blocks tile the core from its top-left corner.
    stats
        Names among :data:`icechart.io.contract.TEXTURE_STATS`.
    factor
        Block size.

    Returns
    -------
    dict
        ``stat -> (ceil(rows/f), ceil(cols/f))`` float32, NaN where a block has no valid pixel.
    """
    hh, ww = win.shape
    r, w = hh - 2 * halo, ww - 2 * halo
    okf = np.isfinite(win)
    zf = np.where(okf, win, np.float32(0))  # zero-filled values, and validity as 0/1 weights
    vf = okf.astype(np.float32)
    core = (slice(halo, halo + r), slice(halo, halo + w))
    z, v = zf[core], vf[core]
    n = _block_sum(v, factor)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_n = np.where(n > 0, np.float32(1) / np.maximum(n, np.float32(1)), np.float32(np.nan))
        mean = _block_sum(z, factor) * inv_n
        if "std" in stats:
            var = _block_sum(z * z, factor) * inv_n - mean * mean
            out["std"] = np.sqrt(np.maximum(var, np.float32(0)))
        buf = np.empty((r, w), np.float32)
        pair = np.empty((r, w), np.float32)
        for stat, k in (("lag1", 1), ("lag4", 4)):
            if stat not in stats:
                continue
            tot = np.zeros_like(n)
            cnt = np.zeros_like(n)
            for shifted in ((slice(halo, halo + r), slice(halo + k, halo + k + w)),):  # along the line
                np.multiply(v, vf[shifted], out=pair)  # 1 where both pixels are valid
                np.subtract(zf[shifted], z, out=buf)
                np.multiply(buf, buf, out=buf)
                buf *= pair
                tot += _block_sum(buf, factor)
                cnt += _block_sum(pair, factor)
            out[stat] = np.where(cnt > 0, np.sqrt(tot / np.maximum(cnt, np.float32(1)) / np.float32(2)), np.float32(np.nan))
        if "bright" in stats:
            part = (slice(halo - 1, halo + r + 1), slice(halo - 1, halo + w + 1))
            s3 = ndimage.uniform_filter(zf[part], 3, mode="constant")[1:-1, 1:-1]
            c3 = ndimage.uniform_filter(vf[part], 3, mode="constant")[1:-1, 1:-1]
            np.maximum(c3, np.float32(1e-6), out=c3)
            np.divide(s3, c3, out=s3)  # 3 x 3 mean over valid neighbours
            oh, ow = n.shape
            if oh * factor != r or ow * factor != w:
                s3 = np.pad(s3, ((0, oh * factor - r), (0, ow * factor - w)), constant_values=-np.inf)
            above = s3.reshape(oh, factor, ow, factor) > np.nan_to_num(mean, nan=np.inf)[:, None, :, None]
            above = above.reshape(oh * factor, ow * factor)[:r, :w] & okf[core]
            out["bright"] = _block_sum(above.astype(np.float32), factor) * inv_n
    return {k: v.astype(np.float32, copy=False) for k, v in out.items()}


def _texture_window(scene: Scene, name: str, rows: tuple[int, int], cols: tuple[int, int], halo: int) -> np.ndarray:
    """SAR ``name`` over rows/cols plus a halo (NaN beyond the image and at invalid pixels)."""
    lines, samples = scene.shape
    r0, r1 = max(rows[0] - halo, 0), min(rows[1] + halo, lines)
    c0, c1 = max(cols[0] - halo, 0), min(cols[1] + halo, samples)
    win = (slice(r0, r1), slice(c0, c1))
    a = np.where(scene.valid(win), scene.sar(name, win), np.float32(np.nan))
    pad = ((r0 - (rows[0] - halo), rows[1] + halo - r1), (c0 - (cols[0] - halo), cols[1] + halo - c1))
    if any(p for pp in pad for p in pp):
        a = np.pad(a, pad, constant_values=np.nan)
    return a.astype(np.float32, copy=False)


def _column_windows(scene: Scene, names: Sequence[str], samples: int, factor: int) -> list[tuple[int, int]]:
    """SAR column ranges ``[c0, c1)`` to read the SAR-like channels in (multiples of ``factor``).

    A variable stored in compressed chunks is decompressed a whole chunk at a time. Full-width
    row blocks shorter than a chunk reuse each chunk only while HDF5's chunk cache (64 MiB per
    variable by default) holds a whole row of chunks. For a 10000 x 10000 scene with
    2000 x 2000 float32 chunks it does not (80 MB), and every chunk was decompressed ~6 times
    (features took 8 s instead of 4.5 s). Then the columns are cut into windows of whole chunks
    that fit the cache, walked down the rows before moving right, so each chunk is decompressed
    once and memory does not grow with the scene width. Otherwise (contiguous variables, or a
    chunk row that fits) one full-width window, as fewer, longer reads are faster.
    """
    import netCDF4

    cache = int(netCDF4.get_chunk_cache()[0])  # the default each opened variable gets
    width = samples
    for name in {*names, C.PRIMARY, C.SECONDARY}:
        if name not in scene.ds:
            continue
        var = scene.ds[name]
        chunks = var.encoding.get("chunksizes")
        if not chunks or len(chunks) != 2 or chunks[1] >= samples:
            continue
        chunk_bytes = int(chunks[0]) * int(chunks[1]) * var.dtype.itemsize
        per_row = -(-samples // int(chunks[1]))
        if per_row * chunk_bytes <= cache // 2:
            continue  # a whole row of chunks stays cached
        fit = max(1, cache // 2 // max(chunk_bytes, 1))  # chunks a window may span
        width = min(width, fit * int(chunks[1]))
    width = max(factor, width // factor * factor)
    return [(c0, min(c0 + width, samples)) for c0 in range(0, samples, width)]


def _coarse_index(pos: np.ndarray, n_coarse: int, interp: Interp) -> np.ndarray:
    """Fractional (bilinear) or integer (nearest) coarse-grid index of SAR positions."""
    f = C.COARSE_FACTOR
    if interp == "nearest":
        return np.clip(np.floor(pos / f), 0, n_coarse - 1)
    return np.clip((pos - (f - 1) / 2.0) / f, 0, n_coarse - 1)


def _interp_coarse(a: np.ndarray, rpos: np.ndarray, cpos: np.ndarray, interp: Interp) -> np.ndarray:
    ri = _coarse_index(rpos, a.shape[0], interp)
    ci = _coarse_index(cpos, a.shape[1], interp)
    if interp == "nearest":
        return a[np.ix_(ri.astype(np.intp), ci.astype(np.intp))].astype(np.float32)
    rr, cc = np.meshgrid(ri, ci, indexing="ij")
    return ndimage.map_coordinates(
        a.astype(np.float32), [rr, cc], order=1, mode="nearest", prefilter=False
    ).astype(np.float32)


def _check_channels(scene: Scene, channels: Sequence[str]) -> None:
    unknown = [c for c in channels if c not in C.ALL_CHANNELS]
    if unknown:
        raise BadDataError(f"unknown input channel(s) {', '.join(unknown)}")
    missing = sorted({v for c in channels if (v := C.source_variable(c)) is not None and v not in scene.ds})
    if missing:
        raise BadDataError(
            f"scene {scene.scene_id} ({scene.path}) lacks channel(s) "
            f"{', '.join(f'`{m}`' for m in missing)}"
        )


def raw_features(
    scene: Scene,
    channels: Sequence[str],
    *,
    factor: int = 10,
    method: Method = "mean",
    interp: Interp = "bilinear",
    rows: slice | None = None,
) -> np.ndarray:
    """Unnormalised feature stack at the downscaled grid; invalid pixels stay NaN.

    Same arguments as :func:`build_features` without ``norm``. Used by the training cache and
    :func:`compute_norm`.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    _check_channels(scene, channels)
    lines, samples = scene.shape
    oh, ow = output_shape(scene.shape, factor)
    r0, r1 = _row_range(rows, oh)
    out = np.full((len(channels), r1 - r0, ow), np.nan, dtype=np.float32)
    if r1 <= r0:
        return out
    rcent = pixel_centres(lines, factor, method)[r0:r1]
    ccent = pixel_centres(samples, factor, method)
    sar_idx = [(k, c) for k, c in enumerate(channels) if C.channel_kind(c) == "sar"]
    tex: dict[str, list[tuple[int, str]]] = {}
    for k, c in enumerate(channels):
        if C.channel_kind(c) == "texture":
            tex.setdefault(str(C.source_variable(c)), []).append((k, c.split("_", 1)[1]))
    if sar_idx or tex:
        # Column windows outermost, row blocks inside: see _column_windows.
        for c0, c1 in _column_windows(scene, [c for _, c in sar_idx] + list(tex), samples, factor):
            o0, o1 = c0 // factor, -(-c1 // factor)
            cols = slice(c0, c1, factor) if method == "subsample" else slice(c0, c1)
            for b0 in range(r0, r1, _BLOCK_OUT_ROWS):
                b1 = min(b0 + _BLOCK_OUT_ROWS, r1)
                if method == "subsample":
                    win = (slice(b0 * factor, min(b1 * factor, lines), factor), cols)
                else:
                    win = (slice(b0 * factor, min(b1 * factor, lines)), cols)
                # Texture sources first: the core of each halo window is also what the block mean
                # of the same variable reads, so HH and HV are read (and checked) once per block.
                cores: dict[str, np.ndarray] = {}
                for name, wanted in tex.items():
                    a = _texture_window(scene, name, (b0 * factor, min(b1 * factor, lines)), (c0, c1), TEXTURE_HALO)
                    st = texture_stats(a, [s for _, s in wanted], factor=factor)
                    for k, stat in wanted:
                        out[k, b0 - r0 : b1 - r0, o0:o1] = st[stat]
                    if method == "mean":
                        cores[name] = a[TEXTURE_HALO : a.shape[0] - TEXTURE_HALO, TEXTURE_HALO : a.shape[1] - TEXTURE_HALO]
                valid = None
                for k, name in sar_idx:
                    if name in cores:
                        a = cores[name]
                    else:
                        valid = scene.valid(win) if valid is None else valid
                        a = np.where(valid, scene.sar(name, win), np.float32(np.nan))
                    red = a if method == "subsample" else _block_reduce_mean(a, factor)
                    out[k, b0 - r0 : b1 - r0, o0:o1] = red
    for k, name in enumerate(channels):
        kind = C.channel_kind(name)
        if kind == "coarse":
            out[k] = _interp_coarse(scene.coarse(name), rcent, ccent, interp)
        elif name == "month":
            out[k] = 2.0 * scene.month / 11.0 - 1.0
    if "lat" in channels or "lon" in channels:
        lat, lon = scene.latlon(rows=rcent, cols=ccent)
        if "lat" in channels:
            out[list(channels).index("lat")] = lat
        if "lon" in channels:
            out[list(channels).index("lon")] = lon
    return out


def normalise(x: np.ndarray, norm: Mapping[str, Any] | None, *, copy: bool = True) -> np.ndarray:
    """Apply ``(x - mean) / std`` per channel (axis 0) when ``norm`` is given; NaN -> 0."""
    out = np.array(x, dtype=np.float32, copy=copy)
    if norm is not None:
        mean = np.asarray(norm["mean"], dtype=np.float32)
        std = np.asarray(norm["std"], dtype=np.float32)
        if mean.shape[0] != out.shape[0] or std.shape[0] != out.shape[0]:
            raise ValueError(
                f"normalisation has {mean.shape[0]} channels, the stack {out.shape[0]}"
            )
        shape = (-1,) + (1,) * (out.ndim - 1)
        out -= mean.reshape(shape)
        out /= np.where(std > 0, std, 1.0).reshape(shape)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def build_features(
    scene: Scene,
    channels: Sequence[str],
    *,
    factor: int = 10,
    norm: Mapping[str, Any] | None = None,
    method: Method = "mean",
    interp: Interp = "bilinear",
    rows: slice | None = None,
) -> np.ndarray:
    """The network input for ``scene`` at the downscaled grid.

    Parameters
    ----------
    scene
        An opened scene (:func:`icechart.io.scene.open_scene`).
    channels
        Channel names (:data:`icechart.io.contract.ALL_CHANNELS`), in network order.
    factor
        Downscaling factor (10: 80 m -> 800 m).
    norm
        ``{"mean": [...], "std": [...]}`` per channel (from :func:`compute_norm`, stored with
        the model); None leaves values unnormalised.
    method
        ``"mean"`` (average valid pixels of each block) or ``"subsample"`` (one pixel in f).
    interp
        ``"bilinear"`` or ``"nearest"`` for the 2 km AMSR2/ERA5 grid.
    rows
        A contiguous slice of *downscaled* rows (to tile a scene by row blocks); None = all.

    Returns
    -------
    numpy.ndarray
        ``(C, rows, ceil(samples/factor))`` float32; NaN/invalid -> 0 after normalising.

    Raises
    ------
    BadDataError
        A channel is unknown or missing from the scene (65, naming both).
    """
    raw = raw_features(scene, channels, factor=factor, method=method, interp=interp, rows=rows)
    return normalise(raw, norm, copy=False)


def full_resolution_sar(scene: Scene, *, rows: tuple[int, int] | None = None) -> np.ndarray:
    """The learned stem's inputs (:data:`icechart.io.contract.STEM_INPUTS`) at 80 m.

    ``(2, rows, samples)`` float32, unnormalised, NaN where the SAR is invalid; ``rows`` is a
    range of SAR lines (None: all). The same array feeds the training cache and prediction.
    """
    lines, _ = scene.shape
    r0, r1 = rows if rows is not None else (0, lines)
    win = (slice(r0, r1), slice(None))
    valid = scene.valid(win)
    return np.stack([np.where(valid, scene.sar(n, win), np.float32(np.nan)) for n in C.STEM_INPUTS])


def downscaled_valid(scene: Scene, *, factor: int, rows: slice | None = None) -> np.ndarray:
    """True at downscaled pixels whose block holds at least one valid SAR pixel."""
    lines, _ = scene.shape
    oh, ow = output_shape(scene.shape, factor)
    r0, r1 = _row_range(rows, oh)
    out = np.zeros((r1 - r0, ow), dtype=bool)
    for b0 in range(r0, r1, _BLOCK_OUT_ROWS):
        b1 = min(b0 + _BLOCK_OUT_ROWS, r1)
        v = scene.valid((slice(b0 * factor, min(b1 * factor, lines)), slice(None)))
        out[b0 - r0 : b1 - r0] = _block_any(v, factor)
    return out


def _block_any(v: np.ndarray, factor: int) -> np.ndarray:
    h, w = v.shape
    oh, ow = -(-h // factor), -(-w // factor)
    v = np.pad(v, ((0, oh * factor - h), (0, ow * factor - w)), constant_values=False)
    return np.asarray(v.reshape(oh, factor, ow, factor).any(axis=(1, 3)))


def block_mode(a: np.ndarray, factor: int) -> np.ndarray:
    """Most frequent value of each ``factor x factor`` block of a uint8 array (FILL counts too;
    ties go to the smaller value). Partial edge blocks use their real pixels only."""
    h, w = a.shape
    oh, ow = -(-h // factor), -(-w // factor)
    pad = ((0, oh * factor - h), (0, ow * factor - w))
    real = np.pad(np.ones((h, w), bool), pad, constant_values=False).reshape(oh, factor, ow, factor)
    b = np.pad(a, pad, constant_values=FILL).reshape(oh, factor, ow, factor)
    best = np.full((oh, ow), FILL, dtype=np.uint8)
    best_n = np.full((oh, ow), -1, dtype=np.int32)
    for val in np.unique(a):
        n = ((b == val) & real).sum(axis=(1, 3), dtype=np.int32)
        better = n > best_n
        best[better] = val
        best_n[better] = n[better]
    return best


def downscale_labels(
    scene: Scene, chart: str, *, factor: int, method: LabelMethod = "mode"
) -> np.ndarray:
    """A label chart at the downscaled grid (uint8, FILL kept).

    ``"mode"`` takes each block's most frequent value (FILL included, so land and no-data
    edges stay masked); ``"subsample"`` takes the block's first pixel (the reference).
    """
    lines, samples = scene.shape
    oh, ow = output_shape(scene.shape, factor)
    if method == "subsample":
        return np.ascontiguousarray(
            scene.labels(chart, (slice(None, None, factor), slice(None, None, factor)))
        )
    out = np.empty((oh, ow), dtype=np.uint8)
    for b0 in range(0, oh, _BLOCK_OUT_ROWS):
        b1 = min(b0 + _BLOCK_OUT_ROWS, oh)
        lab = scene.labels(chart, (slice(b0 * factor, min(b1 * factor, lines)), slice(None)))
        out[b0:b1] = block_mode(lab, factor)
    return out


class _Moments:
    """Running per-channel sum / sum of squares / count (float64)."""

    def __init__(self, n: int) -> None:
        self.s = np.zeros(n)
        self.ss = np.zeros(n)
        self.n = np.zeros(n)

    def add(self, x: np.ndarray) -> None:
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        finite = np.isfinite(flat)
        v = np.where(finite, flat, 0.0)
        self.s += v.sum(axis=1)
        self.ss += (v * v).sum(axis=1)
        self.n += finite.sum(axis=1)


def norm_from_stacks(stacks: Iterable[np.ndarray], channels: Sequence[str]) -> dict[str, list[float]]:
    """Per-channel mean and standard deviation from unnormalised stacks (NaN ignored).

    Derived channels (month, lat, lon) take :data:`FIXED_NORM`; a channel with no finite value
    or zero spread gets std 1.
    """
    m = _Moments(len(channels))
    for x in stacks:
        m.add(x)
    mean, std = [], []
    for k, name in enumerate(channels):
        if name in FIXED_NORM:
            mu, sd = FIXED_NORM[name]
        elif m.n[k] == 0:
            logger.warning("channel %s has no finite value in the training scenes", name)
            mu, sd = 0.0, 1.0
        else:
            mu = m.s[k] / m.n[k]
            var = max(m.ss[k] / m.n[k] - mu * mu, 0.0)
            sd = math.sqrt(var) if var > 1e-12 else 1.0
        mean.append(float(mu))
        std.append(float(sd))
    return {"mean": mean, "std": std}


def compute_norm(
    scenes: Iterable[Scene],
    channels: Sequence[str],
    *,
    factor: int = 10,
    method: Method = "mean",
    interp: Interp = "bilinear",
) -> dict[str, list[float]]:
    """Normalisation statistics ``{"mean": [...], "std": [...]}`` from the training scenes,
    computed on the downscaled features (what the network sees)."""
    return norm_from_stacks(
        (raw_features(s, channels, factor=factor, method=method, interp=interp) for s in scenes),
        channels,
    )
