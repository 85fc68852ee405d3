"""The MMSeaIce multi-task U-Net (reference/method.md "Network").

An input block and four pooling stages (three contracting blocks and a bridge) with filters
``[32, 32, 64, 64]`` (bridge at the last value); every block is two (3x3 convolution without
bias, BatchNorm, ReLU). The decoder upsamples bilinearly, pads to the skip connection's size (so
odd sizes work), concatenates and applies the same double convolution. Heads on the last decoder
features: SIC a per-pixel linear regression (1 value; target = class index 0..10) or, for
Model 8, 11 logits; SOD a 1x1 convolution with 6 logits; FLOE with 7 (no spurious "mask" logit).
Model 9 (``separate_decoders``): shared encoder and bridge, one decoder per chart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from icechart.classes import CHARTS, N_CLASSES

logger = logging.getLogger(__name__)

SIC_MODES = ("regression", "classification")
DEFAULT_FILTERS = (32, 32, 64, 64)
_MIN_SIZE = 16  # 4 poolings need at least 16 pixels; smaller inputs are padded then cropped


class DoubleConv(nn.Sequential):
    """(3x3 conv without bias, BatchNorm, ReLU) x 2."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Bilinear x2 upsampling, pad to the skip's size, concatenate, double convolution."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.conv = DoubleConv(c_in + c_skip, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        dh = skip.shape[-2] - x.shape[-2]
        dw = skip.shape[-1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class Decoder(nn.Module):
    """Expanding path mirroring the encoder's filters."""

    def __init__(self, filters: Sequence[int], bridge: int) -> None:
        super().__init__()
        ups = []
        c = bridge
        for f in reversed(list(filters)):
            ups.append(Up(c, f, f))
            c = f
        self.ups = nn.ModuleList(ups)
        self.out_channels = c

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)
        return x


class UNet(nn.Module):
    """Multi-task U-Net returning ``{"SIC", "SOD", "FLOE"}`` outputs at the input's size.

    Parameters
    ----------
    in_channels
        Number of input channels (16 for the winning MMSeaIce set).
    filters
        Filters of the input block and the contracting blocks; the bridge uses the last one.
    sic_mode
        ``"regression"`` (1 output, MSE loss) or ``"classification"`` (11 logits, Model 8).
    separate_decoders
        One decoder per chart (Model 9) instead of a shared one.
    """

    def __init__(
        self,
        in_channels: int,
        filters: Sequence[int] = DEFAULT_FILTERS,
        *,
        sic_mode: str = "regression",
        separate_decoders: bool = False,
    ) -> None:
        super().__init__()
        if sic_mode not in SIC_MODES:
            raise ValueError(f"sic_mode must be one of {SIC_MODES}, got {sic_mode!r}")
        filters = [int(f) for f in filters]
        if len(filters) < 1 or min(filters) < 1 or in_channels < 1:
            raise ValueError("filters and in_channels must be positive")
        self.in_channels = in_channels
        self.filters = filters
        self.sic_mode = sic_mode
        self.separate_decoders = separate_decoders
        self.inc = DoubleConv(in_channels, filters[0])
        self.down = nn.ModuleList(
            DoubleConv(filters[i - 1], filters[i]) for i in range(1, len(filters))
        )
        bridge = filters[-1]
        self.bridge = DoubleConv(filters[-1], bridge)
        self.n_pool = len(filters)
        n_out = {"SIC": 1 if sic_mode == "regression" else N_CLASSES["SIC"]}
        n_out.update({c: N_CLASSES[c] for c in ("SOD", "FLOE")})
        if separate_decoders:
            self.decoders = nn.ModuleDict({c: Decoder(filters, bridge) for c in CHARTS})
        else:
            self.decoder = Decoder(filters, bridge)
        self.heads = nn.ModuleDict({c: nn.Conv2d(filters[0], n_out[c], 1) for c in CHARTS})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        need = max(_MIN_SIZE, 2**self.n_pool)
        ph, pw = max(0, need - h), max(0, need - w)
        if ph or pw:
            x = F.pad(x, [0, pw, 0, ph], mode="replicate")
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        z = self.bridge(F.max_pool2d(skips[-1], 2))
        if self.separate_decoders:
            feats = {c: self.decoders[c](z, skips) for c in CHARTS}
        else:
            shared = self.decoder(z, skips)
            feats = {c: shared for c in CHARTS}
        out: dict[str, torch.Tensor] = {c: self.heads[c](feats[c]) for c in CHARTS}
        if ph or pw:
            out = {c: t[..., :h, :w] for c, t in out.items()}
        return out

    @property
    def arch(self) -> dict[str, Any]:
        """The ``arch`` mapping that :func:`build_net` rebuilds this network from."""
        return {
            "in_channels": self.in_channels,
            "filters": list(self.filters),
            "sic_mode": self.sic_mode,
            "separate_decoders": self.separate_decoders,
        }


def build_net(arch: Mapping[str, Any]) -> UNet:
    """Build a :class:`UNet` from ``{"in_channels", "filters", "sic_mode", "separate_decoders"}``."""
    known = {"in_channels", "filters", "sic_mode", "separate_decoders"}
    extra = set(arch) - known
    if extra:
        raise ValueError(f"unknown architecture key(s): {', '.join(sorted(extra))}")
    return UNet(
        int(arch["in_channels"]),
        tuple(arch.get("filters", DEFAULT_FILTERS)),
        sic_mode=str(arch.get("sic_mode", "regression")),
        separate_decoders=bool(arch.get("separate_decoders", False)),
    )


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
