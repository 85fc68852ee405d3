"""The forward pass: a scene's network input, tiled inference, flips and ensemble averaging.

Everything here works at the network's grid (the downscaled ``factor``); turning its outputs
into charts is :mod:`icechart.infer.decide`. torch is imported only inside :func:`forward`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from icechart.classes import CHARTS, N_CLASSES
from icechart.errors import BadDataError, TryAgainError, first_line
from icechart.infer.tiling import Blender, iter_tiles
from icechart.io import contract as C
from icechart.io.scene import Scene

if TYPE_CHECKING:
    from icechart.model.checkpoint import LoadedModel
    from icechart.model.contract import ModelContract

logger = logging.getLogger(__name__)

DEFAULT_TILE = 512
"""Downscaled pixels per tile side (a 5000 x 5000 scene, 500 x 500 at 800 m, runs whole)."""
DEFAULT_OVERLAP = 64
_FEATURE_BAND = 256  # downscaled rows of features built at once (bounds the reader's memory)
FEATURE_THREADS = 2
"""Feature bands built at once (read/decompress one while averaging another)."""

Outputs = tuple["np.ndarray | None", dict[str, np.ndarray]]
"""``(sic, probs)``: SIC regression ``(H, W)`` (None for a classification head) and softmax
probabilities per chart ``(n, H, W)``."""


def check_channels(scene: Scene, model: Any) -> None:
    """BadDataError (65) naming every input variable of the model that the scene lacks."""
    missing = [v for v in C.required_variables(list(model.contract.channels)) if v not in scene.ds]
    if missing:
        raise BadDataError(
            f"{scene.path}: lacks variable(s) {', '.join(f'`{m}`' for m in missing)} that model "
            f"{model.model_id} needs as input channels; use a model trained on the channels "
            "this file has, or a complete AI4Arctic file"
        )


def scene_features(scene: Scene, contract: "ModelContract", *, normalised: bool = True) -> np.ndarray:
    """The network input for ``scene`` from the model's contract, built by row bands.

    With ``normalised=False`` the stack is left unnormalised with NaN at invalid pixels (as
    :func:`icechart.features.raw_features`), to be normalised per ensemble member.

    Bands of :data:`_FEATURE_BAND` rows are built on :data:`FEATURE_THREADS` threads: reading
    (and, for compressed files, decompressing) one band's SAR runs while another band is
    averaged, both outside the GIL; reads stay serialised by xarray's HDF5 lock. Each band is
    computed as it would be alone, so the stack is the same bytes.
    """
    from concurrent.futures import ThreadPoolExecutor

    from icechart.features import build_features, output_shape, raw_features

    oh, _ = output_shape(scene.shape, contract.factor)
    kw: dict[str, Any] = dict(factor=contract.factor, method=contract.downscale_method, interp=contract.interp)
    if normalised:
        kw["norm"] = contract.norm
    build = build_features if normalised else raw_features
    channels = list(contract.channels)
    if oh <= _FEATURE_BAND:
        return build(scene, channels, **kw)
    scene.valid((slice(0, 1), slice(0, 1)))  # the shared validity mask, made once before the threads
    bands = [slice(r, min(r + _FEATURE_BAND, oh)) for r in range(0, oh, _FEATURE_BAND)]
    out: np.ndarray | None = None
    with ThreadPoolExecutor(max_workers=FEATURE_THREADS, thread_name_prefix="icechart-features") as pool:
        # at most FEATURE_THREADS bands in flight: memory stays a few bands of SAR rows
        for k0 in range(0, len(bands), FEATURE_THREADS):
            group = bands[k0 : k0 + FEATURE_THREADS]
            for band, part in zip(group, pool.map(lambda b: build(scene, channels, rows=b, **kw), group)):
                if out is None:
                    out = np.empty((part.shape[0], oh, part.shape[2]), dtype=np.float32)
                out[:, band] = part
    assert out is not None
    return out


def forward(
    model: "LoadedModel",
    x: np.ndarray,
    *,
    tile_size: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
) -> Outputs:
    """Run the network on a ``(C, H, W)`` stack in blended tiles.

    Returns
    -------
    sic, probs
        SIC regression ``(H, W)`` (None for a classification head) and softmax probabilities
        per chart ``(n, H, W)``.

    Raises
    ------
    TryAgainError
        Out of GPU memory (75).
    """
    import torch

    net = model.net
    device = next(net.parameters()).device
    regression = model.contract.regression
    _, h, w = x.shape
    n_sic = 1 if regression else N_CLASSES["SIC"]
    total = n_sic + N_CLASSES["SOD"] + N_CLASSES["FLOE"]
    blend = Blender((total, h, w), overlap)

    def run(win: Any) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x[(slice(None), *win)]))[None].to(device)
        # channels-last input: oneDNN's convolutions run ~2x faster on it (the outputs differ
        # from the NCHW ones by float rounding, ~1e-6)
        t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = net(t)
            parts = []
            for chart in CHARTS:
                o = out[chart][0].float()
                if chart != "SIC" or not regression:
                    o = torch.softmax(o, dim=0)
                parts.append(o)
            return torch.cat(parts, dim=0).cpu().numpy()

    windows = list(iter_tiles((h, w), tile_size, overlap))
    threads = torch.get_num_threads()
    try:
        if device.type == "cpu" and len(windows) > 1 and threads > 1:
            # Whole tiles on parallel threads, one torch thread each, instead of every operator
            # split over the cores: no barrier per operator (each stalls whenever another
            # process takes a core: 2-4x slower on a shared machine). Each tile's output is that
            # of a one-thread pass whatever the thread count (oneDNN's split over threads
            # changes float rounding, ~1e-6), and tiles are blended in their order, as serially.
            from collections import deque
            from concurrent.futures import ThreadPoolExecutor

            from icechart.infer.threads import one_thread_workers

            # Each worker sets its own one thread (icechart.infer.threads); this thread's
            # setting is left alone.
            with one_thread_workers() as init, ThreadPoolExecutor(
                max_workers=threads, thread_name_prefix="icechart-forward", initializer=init
            ) as pool:
                pending = deque(pool.submit(run, win) for win in windows[:threads])
                for k, win in enumerate(windows):
                    res = pending.popleft().result()
                    if k + threads < len(windows):  # at most `threads` tiles in flight
                        pending.append(pool.submit(run, windows[k + threads]))
                    blend.add(win, res)
                    del res
        else:
            for win in windows:
                blend.add(win, run(win))
    except RuntimeError as exc:  # CUDA OOM is a RuntimeError subclass
        if "out of memory" in str(exc).lower():
            raise TryAgainError(
                f"out of GPU memory ({first_line(exc, 80)}); retry with a smaller "
                "tile size or on CPU"
            ) from exc
        raise
    res = blend.result()
    probs: dict[str, np.ndarray] = {}
    k = 1 if regression else 0
    if not regression:
        probs["SIC"] = res[0:n_sic]
        k = n_sic
    probs["SOD"] = res[k : k + N_CLASSES["SOD"]]
    probs["FLOE"] = res[k + N_CLASSES["SOD"] : k + N_CLASSES["SOD"] + N_CLASSES["FLOE"]]
    return (np.ascontiguousarray(res[0]) if regression else None), probs


FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (1,), (1, 2))
"""Test-time augmentation: identity, left-right, up-down and both flips of a (C, H, W) stack
(the dihedral flips the training augmentation also draws, reference/method.md)."""


def _unflip(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Undo a flip of (C, H, W) axes on a (H, W) or (n, H, W) output."""
    if not axes:
        return a
    shift = a.ndim - 3
    return np.flip(a, tuple(ax + shift for ax in axes))


def forward_tta(
    model: "LoadedModel",
    x: np.ndarray,
    *,
    tile_size: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    tta: bool = False,
) -> Outputs:
    """:func:`forward`, averaged over :data:`FLIPS` when ``tta`` (outputs flipped back first).

    The average over the flip group makes the prediction flip-equivariant (exactly so for a
    scene that goes through in one tile and whose sides are multiples of 2**pools).
    """
    if not tta:
        return forward(model, x, tile_size=tile_size, overlap=overlap)
    sic_sum: np.ndarray | None = None
    p_sum: dict[str, np.ndarray] = {}
    for axes in FLIPS:
        xf = np.ascontiguousarray(np.flip(x, axes)) if axes else x
        sic, probs = forward(model, xf, tile_size=tile_size, overlap=overlap)
        if sic is not None:
            u = _unflip(sic, axes)
            sic_sum = u.copy() if sic_sum is None else sic_sum + u
        for chart, p in probs.items():
            u = _unflip(p, axes)
            p_sum[chart] = u.copy() if chart not in p_sum else p_sum[chart] + u
    n = np.float32(len(FLIPS))
    sic_out = None if sic_sum is None else np.ascontiguousarray(sic_sum / n)
    return sic_out, {c: np.ascontiguousarray(v / n) for c, v in p_sum.items()}


class MemberAverage:
    """Running average of members' outputs (Welford for the SIC spread), so memory does not
    grow with the number of members.

    SIC regression values are averaged; class probabilities are averaged per chart. The
    standard deviation (ddof 1) is taken over each member's SIC value: its regression output,
    or its expected class ``sum_k k p_k`` for a classification head.
    """

    def __init__(self) -> None:
        self.n = 0
        self.probs: dict[str, np.ndarray] = {}
        self._mean: np.ndarray | None = None  # float64 running mean of the SIC values
        self._m2: np.ndarray | None = None
        self._regression = True

    def add(self, sic: np.ndarray | None, probs: dict[str, np.ndarray]) -> None:
        self.n += 1
        n = self.n
        if n == 1:
            self.probs = {c: np.array(p, dtype=np.float32) for c, p in probs.items()}
        else:
            for c, p in probs.items():
                self.probs[c] += (p - self.probs[c]) / np.float32(n)
        if sic is not None:
            v = np.asarray(sic, dtype=np.float64)
        else:
            k = np.arange(probs["SIC"].shape[0], dtype=np.float64)[:, None, None]
            v = (probs["SIC"] * k).sum(axis=0)
        if self._mean is None or self._m2 is None:
            self._mean, self._m2 = v.copy(), np.zeros_like(v)
            self._regression = sic is not None
        else:
            delta = v - self._mean
            self._mean += delta / n
            self._m2 += delta * (v - self._mean)

    def result(self) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
        """(SIC mean or None for a classification head, SIC standard deviation across members
        or None for one member, averaged probabilities)."""
        if self.n == 0 or self._mean is None or self._m2 is None:
            raise ValueError("no member outputs to combine")
        sic = self._mean.astype(np.float32) if self._regression else None
        se = np.sqrt(self._m2 / (self.n - 1)).astype(np.float32) if self.n > 1 else None
        return sic, se, self.probs


def forward_members(
    members: list[Any],
    raw: np.ndarray,
    *,
    normalised: bool,
    tile_size: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    tta: bool = False,
    scene: Scene | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, np.ndarray], float]:
    """Every member's outputs on one feature stack, averaged (:class:`MemberAverage`).

    With ``normalised=False`` the stack is normalised per member with its own statistics (one
    copy at a time, reused while consecutive members share them). Given ``scene``, a member
    with a learned downscaling stem gets its stem's channels appended first
    (:func:`icechart.model.stem.with_stem`; without ``scene`` the stack must hold them).
    Returns (SIC mean, SIC spread or None, probabilities, seconds spent normalising).
    """
    import time

    from icechart.features import normalise
    from icechart.model.stem import has_stem, with_stem

    avg = MemberAverage()
    t_norm = 0.0
    x, key = raw, None
    for m in members:
        if not normalised:
            tn = time.perf_counter()
            if scene is not None and has_stem(m):
                x, key = normalise(with_stem(m, raw, scene=scene), m.contract.norm), None
            else:
                k = m.contract.norm_key()
                if k != key:
                    x, key = normalise(raw, m.contract.norm), k
            t_norm += time.perf_counter() - tn
        avg.add(*forward_tta(m, x, tile_size=tile_size, overlap=overlap, tta=tta))
    del x
    sic, se, probs = avg.result()
    return sic, se, probs, t_norm
