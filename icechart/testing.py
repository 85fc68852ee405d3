"""Helpers for tests and benchmarks: models with random weights and a complete input contract.

Prediction cost and every product writer are independent of the weights, so tests, the
benchmarks and examples use these instead of training a network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from icechart.io.contract import DEFAULT_CHANNELS


def random_checkpoint(
    path: str | Path,
    *,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    filters: Sequence[int] = (8, 8, 16),
    sic_mode: str = "regression",
    factor: int = 10,
    seed: int = 0,
    norm_shift: float = 0.0,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Save a random-weights U-Net checkpoint (torch seeded with ``seed``) and return its path.

    The metadata is a full input contract: ``channels``, downscale ``factor`` (block mean),
    bilinear AMSR2/ERA5 interpolation and identity normalisation shifted by ``norm_shift``;
    ``extra_meta`` is added on top (e.g. ``calibration``).
    """
    import torch

    from icechart.model.checkpoint import save_checkpoint
    from icechart.model.unet import build_net

    ch = list(channels)
    torch.manual_seed(seed)
    net = build_net({"in_channels": len(ch), "filters": list(filters), "sic_mode": sic_mode})
    meta: dict[str, Any] = {
        "channels": ch,
        "factor": factor,
        "downscale_method": "mean",
        "interp": "bilinear",
        "norm": {"mean": [norm_shift] * len(ch), "std": [1.0] * len(ch)},
        **(extra_meta or {}),
    }
    save_checkpoint(path, net, meta)
    return Path(path)


def labelled_scenes(directory: str | Path, *, shape: tuple[int, int], seed: int, n: int = 3) -> Path:
    """Write ``n`` labelled synthetic scenes (seeds ``seed``, ``seed + 1``, ...) named
    ``2021031{k}T101010_dmi_prep.nc`` into ``directory``: the training data of the tests."""
    from icechart.synth import make_scene, write_scene

    d = Path(directory)
    for k in range(n):
        write_scene(make_scene(shape, seed=seed + k), d / f"2021031{k}T101010_dmi_prep.nc")
    return d
