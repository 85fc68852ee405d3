"""Batch augmentation on the training device (no per-patch CPU work).

The paper's augmentations, each with probability p = 0.5 (reference/method.md): horizontal
flip, vertical flip, rotation by a random angle within +-90 deg, scaling by 0.9-1.1, and CutMix
on the batch. Flips are exact (``torch.flip``); rotation and scaling are one affine warp per
sample through ``affine_grid``/``grid_sample`` (bilinear for inputs, nearest for labels, area
outside the source filled with 0 = the mean for inputs and 255 for labels). Only the samples
that draw a rotation or a scaling are warped. (The reference transforms patch by patch on the
CPU, 0.2-0.9 s a batch, and zooms unscaled patches by 1.1 anyway: a bug not copied.)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from icechart.classes import FILL

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentSpec:
    p: float = 0.5
    max_rotation: float = 90.0
    scale_min: float = 0.9
    scale_max: float = 1.1
    cutmix: bool = True


def _rand(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device)


def augment_batch(
    x: torch.Tensor, y: torch.Tensor, spec: AugmentSpec, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch.

    Parameters
    ----------
    x
        ``(N, C, H, W)`` float inputs (normalised, no NaN).
    y
        ``(N, 3, H, W)`` integer labels (FILL = ignored).
    spec
        Probabilities and ranges.
    gen
        The torch random generator (its state is saved with ``last.pt`` for ``--resume``).

    Returns
    -------
    (x, y) augmented, same shapes and dtypes.
    """
    n = x.shape[0]
    dev = x.device
    p = spec.p
    # Every draw and every decision is made on the generator's device (the CPU), so nothing
    # here waits for the GPU; only the per-sample parameters travel to it.
    draws = _rand(6 * n + 6, gen).cpu()
    d = draws[: 6 * n].view(6, n)
    hflip, vflip = d[0] < p, d[1] < p
    rot = d[2] < p
    scl = d[3] < p
    angle = (d[4] * 2 - 1) * math.radians(spec.max_rotation) * rot
    scale = torch.where(scl, spec.scale_min + d[5] * (spec.scale_max - spec.scale_min), torch.ones_like(d[5]))

    hf = hflip.to(dev, non_blocking=True).view(-1, 1, 1, 1)
    vf = vflip.to(dev, non_blocking=True).view(-1, 1, 1, 1)

    def _flip(t: torch.Tensor) -> torch.Tensor:
        t = torch.where(hf, t.flip(-1), t)
        return torch.where(vf, t.flip(-2), t)

    x, y = _flip(x), _flip(y)
    warp = rot | scl
    if bool(warp.any()):  # a CPU tensor: no device synchronisation
        idx_cpu = warp.nonzero().squeeze(1)
        a, s = angle[idx_cpu], scale[idx_cpu]
        cos, sin = torch.cos(a) / s, torch.sin(a) / s  # sample the source at R(-a)/s: zoom by s
        theta = torch.zeros(idx_cpu.numel(), 2, 3, dtype=torch.float32)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        theta = theta.to(dev, non_blocking=True)
        idx = idx_cpu.to(dev, non_blocking=True)
        xs = x[idx]
        grid = F.affine_grid(theta, [int(idx_cpu.numel()), *xs.shape[1:]], align_corners=False)
        x = x.clone()
        x[idx] = F.grid_sample(xs.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False).to(x.dtype)
        # labels + 1 so that the zero padding becomes -1 -> FILL
        ys = (y[idx].float() + 1.0)
        ys = F.grid_sample(ys, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        ys = ys.round().long() - 1
        ys = torch.where(ys < 0, torch.full_like(ys, FILL), ys)
        y = y.clone()
        y[idx] = ys.to(y.dtype)
    if spec.cutmix and n > 1 and bool(draws[6 * n] < p):
        x, y = _cutmix(x, y, draws[6 * n + 1 : 6 * n + 6], gen)
    return x, y


def _cutmix(
    x: torch.Tensor, y: torch.Tensor, u: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a random box from a shuffled copy of the batch (Yun et al. 2019; area ~ U(0, 1))."""
    n, _, h, w = x.shape
    lam = float(u[0])
    bh, bw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    if bh == 0 or bw == 0:
        return x, y
    cy, cx = int(float(u[1]) * h), int(float(u[2]) * w)
    r0, r1 = max(cy - bh // 2, 0), min(cy + bh // 2 + 1, h)
    c0, c1 = max(cx - bw // 2, 0), min(cx + bw // 2 + 1, w)
    perm = torch.randperm(n, generator=gen, device=gen.device).to(x.device)
    x, y = x.clone(), y.clone()
    x[:, :, r0:r1, c0:c1] = x[perm][:, :, r0:r1, c0:c1]
    y[:, :, r0:r1, c0:c1] = y[perm][:, :, r0:r1, c0:c1]
    return x, y
