"""Checkpoints: safetensors round trip, metadata, sha256, model dirs, corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from icechart.classes import CLASS_TABLE_VERSION
from icechart.errors import ModelError
from icechart.hashing import sha256_file
from icechart.model.checkpoint import (
    load_checkpoint,
    predict_logits,
    read_checkpoint,
    save_checkpoint,
)
from icechart.model.unet import build_net

ARCH = {"in_channels": 3, "filters": [4, 4, 8], "sic_mode": "regression", "separate_decoders": False}
META = {
    "channels": ["nersc_sar_primary", "nersc_sar_secondary", "month"],
    "factor": 10,
    "downscale_method": "mean",
    "interp": "bilinear",
    "norm": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    "val_scores": {"combined": np.float64(50.5)},
}


def _save(path: Path, **meta: object) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(0)
    net = build_net(ARCH)
    return net, save_checkpoint(path, net, {**META, **meta})


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "best.safetensors"
    net, sha = _save(p)
    assert sha == sha256_file(p)
    m = load_checkpoint(p)
    assert m.model_id == f"ckpt-{sha[:12]}"
    assert m.sha256 == sha and m.path == p
    assert not m.net.training
    assert m.meta["arch"] == ARCH
    assert m.meta["class_table_version"] == CLASS_TABLE_VERSION
    assert m.meta["val_scores"]["combined"] == 50.5
    x = np.random.default_rng(0).standard_normal((3, 19, 23)).astype(np.float32)
    net.eval()
    with torch.no_grad():
        ref = net(torch.from_numpy(x)[None])
    out = predict_logits(m.net, x)
    for k in ("SIC", "SOD", "FLOE"):
        np.testing.assert_array_equal(out[k], ref[k][0].numpy())
    # a run directory resolves to its best checkpoint
    assert load_checkpoint(tmp_path).sha256 == sha


def test_model_dir_with_card(tmp_path: Path) -> None:
    d = tmp_path / "mmseaice-x"
    d.mkdir()
    _, sha = _save(d / "weights.safetensors")
    (d / "model.toml").write_text(f'[model]\nid = "mmseaice-x"\nweights = "weights.safetensors"\nsha256 = "{sha}"\n')
    m = load_checkpoint(d)
    assert m.model_id == "mmseaice-x"
    (d / "model.toml").write_text(f'[model]\nid = "x"\nweights = "weights.safetensors"\nsha256 = "{"0" * 64}"\n')
    with pytest.raises(ModelError, match="sha256"):
        load_checkpoint(d)


def test_corrupt_and_missing(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    _save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(p)
    p.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError):
        load_checkpoint(p)
    with pytest.raises(ModelError, match="no such"):
        load_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(ModelError, match="no model here"):
        load_checkpoint(tmp_path / "..")


def test_class_table_mismatch(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    _save(p, class_table_version="other-v0")
    with pytest.raises(ModelError, match="class tables"):
        load_checkpoint(p)


def test_metadata_is_json_in_header(tmp_path: Path) -> None:
    from safetensors import safe_open

    p = tmp_path / "m.safetensors"
    _save(p)
    with safe_open(str(p), framework="pt") as fh:
        meta = json.loads(fh.metadata()["icechart"])
    assert meta["channels"] == META["channels"]
    state, meta2 = read_checkpoint(p)
    assert meta2 == meta and "heads.SIC.weight" in state


def test_arch_mismatch(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    _save(p, arch={**ARCH, "filters": [8, 8, 8]})
    with pytest.raises(ModelError, match="architecture"):
        load_checkpoint(p)


def test_bit_flip_in_weights_is_caught_without_a_model_card(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    _save(p)
    data = bytearray(p.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's bytes; the header stays valid
    p.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="do not match their recorded sha256"):
        load_checkpoint(p)
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="do not match"):
        load_checkpoint(run)  # a training run directory
