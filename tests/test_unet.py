"""The multi-task U-Net: output shapes for odd sizes, variants, parameter count."""

from __future__ import annotations

import pytest
import torch

from icechart.model.unet import UNet, build_net, count_parameters


def _arch(**kw: object) -> dict:
    a = {"in_channels": 16, "filters": [32, 32, 64, 64], "sic_mode": "regression", "separate_decoders": False}
    a.update(kw)
    return a


@pytest.mark.parametrize("hw", [(37, 41), (16, 16), (9, 5), (64, 33)])
def test_output_shapes_any_size(hw: tuple[int, int]) -> None:
    net = build_net(_arch(filters=[4, 4, 8, 8])).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 16, *hw))
    assert set(out) == {"SIC", "SOD", "FLOE"}
    assert out["SIC"].shape == (2, 1, *hw)
    assert out["SOD"].shape == (2, 6, *hw)
    assert out["FLOE"].shape == (2, 7, *hw)


def test_model1_parameter_count() -> None:
    # method.md: about 0.52 M parameters for the 16-channel [32, 32, 64, 64] network
    n = count_parameters(build_net(_arch()))
    assert 500_000 < n < 540_000


def test_classification_and_separate_decoders() -> None:
    net = build_net(_arch(filters=[4, 8], sic_mode="classification", separate_decoders=True)).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 16, 20, 21))
    assert out["SIC"].shape == (1, 11, 20, 21)
    assert hasattr(net, "decoders") and len(net.decoders) == 3
    assert net.arch == {"in_channels": 16, "filters": [4, 8], "sic_mode": "classification", "separate_decoders": True}
    assert build_net(net.arch).arch == net.arch


def test_bad_arch() -> None:
    with pytest.raises(ValueError, match="sic_mode"):
        UNet(3, [4], sic_mode="softmax")
    with pytest.raises(ValueError, match="unknown architecture key"):
        build_net(_arch(depth=5))


def test_backward() -> None:
    net = build_net(_arch(in_channels=3, filters=[4, 4]))
    out = net(torch.randn(2, 3, 24, 24))
    sum(v.mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in net.parameters())
