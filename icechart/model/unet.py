"""The MMSeaIce multi-task U-Net (reference/method.md "Network").

An input block and four pooling stages (three contracting blocks and a bridge) with filters
``[32, 32, 64, 64]`` (bridge at the last value); every block is two (3x3 convolution without
bias, BatchNorm, ReLU). The decoder upsamples bilinearly, pads to the skip connection's size (so
odd sizes work), concatenates and applies the same double convolution. Heads on the last decoder
features: SIC a per-pixel linear regression (1 value; target = class index 0..10) or, for
Model 8, 11 logits; SOD a 1x1 convolution with 6 logits; FLOE with 7 (no spurious "mask" logit).
Model 9 (``separate_decoders``): shared encoder and bridge, one decoder per chart.

Learned downscaling stem (``stem`` > 0, issue 12): a small network on the full-resolution
(80 m) HH and HV, a ``factor x factor`` convolution with stride ``factor`` (so each output pixel
sees exactly the SAR pixels of its downscaled block: no overlap, and tiles aligned to the block
grid join without seams), BatchNorm, ReLU, then a 1 x 1 convolution, BatchNorm, ReLU to
``stem`` channels. ReLU of a learned linear combination of a block's pixels can represent
texture energies (e.g. ``|x_i - x_j|`` from two filters of opposite sign), which a block mean
cannot. The stem's channels are appended to the downscaled features: :meth:`UNet.forward`
takes ``in_channels + stem`` channels, and :meth:`UNet.run_stem` makes the extra ones from the
full-resolution SAR, tile by tile at prediction (trained end to end with the U-Net).
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


class Stem(nn.Module):
    """Learned downscaling of full-resolution SAR (module docstring)."""

    def __init__(self, c_in: int, c_out: int, factor: int) -> None:
        super().__init__()
        hidden = 3 * c_out
        self.factor = factor
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hidden, factor, stride=factor, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, full: torch.Tensor) -> torch.Tensor:
        """``(N, c_in, H, W)`` normalised SAR (0 at invalid pixels) -> ``(N, c_out, ceil(H/f),
        ceil(W/f))``; partial edge blocks are zero-padded."""
        f = self.factor
        ph, pw = (-full.shape[-2]) % f, (-full.shape[-1]) % f
        if ph or pw:
            full = F.pad(full, [0, pw, 0, ph])
        return self.net(full)


class Up(nn.Module):
    """Bilinear x2 upsampling, pad to the skip's size, concatenate, double convolution."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.conv = DoubleConv(c_in + c_skip, c_out)
        self.always_pad = False  # see UNet.always_pad

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        dh = skip.shape[-2] - x.shape[-2]
        dw = skip.shape[-1] - x.shape[-1]
        if dh != 0 or dw != 0 or self.always_pad:
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
        for i, up in enumerate(self.ups):
            x = up(x, skips[-1 - i])
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
    stem, stem_factor, stem_inputs
        Channels of the learned downscaling stem (0: none), its block size (the features'
        downscaling factor) and the number of full-resolution inputs (HH, HV: 2).
    """

    __jit_unused_properties__ = ["arch"]  # torch.jit.script compiles forward only

    def __init__(
        self,
        in_channels: int,
        filters: Sequence[int] = DEFAULT_FILTERS,
        *,
        sic_mode: str = "regression",
        separate_decoders: bool = False,
        stem: int = 0,
        stem_factor: int = 10,
        stem_inputs: int = 2,
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
        self.stem_channels = int(stem)
        self.stem_factor = int(stem_factor)
        self.stem_inputs = int(stem_inputs)
        self.stem = Stem(self.stem_inputs, self.stem_channels, self.stem_factor) if stem > 0 else None
        self.inc = DoubleConv(in_channels + self.stem_channels, filters[0])
        self.down = nn.ModuleList(
            DoubleConv(filters[i - 1], filters[i]) for i in range(1, len(filters))
        )
        bridge = filters[-1]
        self.bridge = DoubleConv(filters[-1], bridge)
        self.n_pool = len(filters)
        self.min_size = max(_MIN_SIZE, 2**self.n_pool)
        # Pad (by 0 where nothing is missing) without asking the shape first: the graph that
        # torch.export traces for ONNX then has no branch on the input size (icechart.model.export).
        self.always_pad = False
        n_out = {"SIC": 1 if sic_mode == "regression" else N_CLASSES["SIC"]}
        n_out.update({c: N_CLASSES[c] for c in ("SOD", "FLOE")})
        # One of the two is None (not in the state dict): TorchScript drops the other branch.
        self.decoders = nn.ModuleDict({c: Decoder(filters, bridge) for c in CHARTS}) if separate_decoders else None
        self.decoder = None if separate_decoders else Decoder(filters, bridge)
        self.heads = nn.ModuleDict({c: nn.Conv2d(filters[0], n_out[c], 1) for c in CHARTS})

    def run_stem(self, full: torch.Tensor) -> torch.Tensor:
        """The stem's channels at the downscaled grid from full-resolution normalised SAR."""
        if self.stem is None:
            raise ValueError("this network has no downscaling stem")
        return self.stem(full)

    def forward_full(self, x: torch.Tensor, full: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`forward` on the features ``x`` plus the stem's channels from ``full``."""
        s = self.run_stem(full)[..., : x.shape[-2], : x.shape[-1]]
        return self.forward(torch.cat([x, s], dim=1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs for ``(N, in_channels + stem, h, w)`` inputs (stem channels last)."""
        # Written so that torch.jit.script compiles it (icechart.model.export): no zip over
        # modules, no ModuleDict lookups by a variable key.
        h, w = x.shape[-2], x.shape[-1]
        ph, pw = max(0, self.min_size - h), max(0, self.min_size - w)
        crop = ph > 0 or pw > 0 or self.always_pad
        if crop:
            x = F.pad(x, [0, pw, 0, ph], mode="replicate")
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        z = self.bridge(F.max_pool2d(skips[-1], 2))
        feats: dict[str, torch.Tensor] = {}
        if self.decoders is not None:
            for c, dec in self.decoders.items():
                feats[c] = dec(z, skips)
        if self.decoder is not None:
            shared = self.decoder(z, skips)
            for c, _head in self.heads.items():  # CHARTS order
                feats[c] = shared
        out: dict[str, torch.Tensor] = {}
        for c, head in self.heads.items():
            t = head(feats[c])
            out[c] = t[:, :, :h, :w] if crop else t
        return out

    @property
    def arch(self) -> dict[str, Any]:
        """The ``arch`` mapping that :func:`build_net` rebuilds this network from."""
        arch: dict[str, Any] = {
            "in_channels": self.in_channels,
            "filters": list(self.filters),
            "sic_mode": self.sic_mode,
            "separate_decoders": self.separate_decoders,
        }
        if self.stem_channels:
            arch.update(stem=self.stem_channels, stem_factor=self.stem_factor, stem_inputs=self.stem_inputs)
        return arch


def build_net(arch: Mapping[str, Any]) -> UNet:
    """Build a :class:`UNet` from ``{"in_channels", "filters", "sic_mode", "separate_decoders"}``
    (and ``stem``, ``stem_factor``, ``stem_inputs`` for a network with a downscaling stem)."""
    known = {"in_channels", "filters", "sic_mode", "separate_decoders", "stem", "stem_factor", "stem_inputs"}
    extra = set(arch) - known
    if extra:
        raise ValueError(f"unknown architecture key(s): {', '.join(sorted(extra))}")
    return UNet(
        int(arch["in_channels"]),
        tuple(arch.get("filters", DEFAULT_FILTERS)),
        sic_mode=str(arch.get("sic_mode", "regression")),
        separate_decoders=bool(arch.get("separate_decoders", False)),
        stem=int(arch.get("stem", 0)),
        stem_factor=int(arch.get("stem_factor", 10)),
        stem_inputs=int(arch.get("stem_inputs", 2)),
    )


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
