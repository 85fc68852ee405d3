"""`icechart export` (icechart.model.export): TorchScript and ONNX files give the PyTorch
network's outputs at any input size and carry the model contract; bad models are 69."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from icechart.classes import CHARTS, CLASS_NAMES
from icechart.cli.main import cli
from icechart.errors import ModelError
from icechart.model.checkpoint import LoadedModel, save_checkpoint
from icechart.model.export import export_model, read_contract
from icechart.model.load import load_model
from icechart.model.unet import build_net
from icechart.testing import random_checkpoint

SHAPES = ((1, 64, 64), (2, 97, 83), (1, 5, 6))
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def _inputs(model: LoadedModel, n: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(n, model.net.in_channels, h, w, generator=torch.Generator().manual_seed(h * w))


def _reference(model: LoadedModel, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = model.net.eval()(x)
    return [out[c].numpy() for c in CHARTS]


def _check_contract(doc: dict, model: LoadedModel) -> None:
    c = model.contract
    assert doc["input"]["channels"] == list(c.channels) and doc["input"]["factor"] == c.factor
    assert doc["input"]["norm"] == json.loads(json.dumps(c.norm))
    assert doc["outputs"]["names"] == list(CHARTS) and doc["outputs"]["sic_mode"] == c.sic_mode
    assert doc["outputs"]["classes"] == {k: list(v) for k, v in CLASS_NAMES.items() if k in CHARTS}
    assert doc["sha256"] == model.sha256 and doc["model_id"] == model.model_id


@pytest.mark.parametrize("arch", [{"sic_mode": "regression"}, {"sic_mode": "classification", "separate_decoders": True}])
def test_torchscript_gives_pytorch_outputs_at_any_size(tmp_path: Path, arch: dict) -> None:
    ckpt = tmp_path / "m.safetensors"
    torch.manual_seed(4)
    net = build_net({"in_channels": 5, "filters": [8, 8, 16], **arch})
    channels = ["nersc_sar_primary", "nersc_sar_secondary", "btemp_18_7h", "t2m", "month"]
    save_checkpoint(ckpt, net, {"channels": channels, "factor": 10, "norm": {"mean": [0.5] * 5, "std": [2.0] * 5}})
    model = load_model(str(ckpt))
    res = export_model(str(ckpt), "torchscript", tmp_path / "m.pt")
    assert res.max_abs_diff == 0.0
    scripted = torch.jit.load(str(res.path))
    for n, h, w in SHAPES:
        x = _inputs(model, n, h, w)  # type: ignore[arg-type]
        with torch.no_grad():
            got = scripted(x)
        for a, b in zip(_reference(model, x), got):  # type: ignore[arg-type]
            np.testing.assert_array_equal(a, b.numpy())
    _check_contract(read_contract(res.path), model)  # type: ignore[arg-type]


def test_onnx_gives_pytorch_outputs_at_any_size(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    ckpt = random_checkpoint(tmp_path / "m.safetensors", seed=2, norm_shift=0.25)
    model = load_model(str(ckpt))
    res = export_model(str(ckpt), "onnx", tmp_path / "m.onnx")
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == list(CHARTS)
    for n, h, w in SHAPES:
        x = _inputs(model, n, h, w)  # type: ignore[arg-type]
        for a, b in zip(_reference(model, x), sess.run(None, {"x": x.numpy()})):  # type: ignore[arg-type]
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    doc = json.loads(sess.get_modelmeta().custom_metadata_map["icechart"])
    _check_contract(doc, model)  # type: ignore[arg-type]
    assert read_contract(res.path) == doc


def test_cli_export_and_its_errors(tmp_path: Path) -> None:
    ckpt = random_checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "out" / "m.pt"
    r = CliRunner().invoke(cli, ["export", "--format", "torchscript", str(ckpt), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.is_file() and "max |difference| 0" in r.output
    r = CliRunner().invoke(cli, ["export", "--format", "torchscript", str(ckpt), "-o", str(out)])
    assert r.exit_code == 73 and "--overwrite" in r.output
    assert CliRunner().invoke(cli, ["export", "--format", "torchscript", str(ckpt), "-o", str(out), "--overwrite"]).exit_code == 0
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    for spec in (str(bad), str(tmp_path / "missing.safetensors"), "no-such-model-id"):
        r = CliRunner().invoke(cli, ["export", "--format", "torchscript", spec, "-o", str(tmp_path / "x.pt")])
        assert r.exit_code == 69, r.output
        assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("icechart: error: ")
    assert not (tmp_path / "x.pt").exists()
    r = CliRunner().invoke(cli, ["export", "--format", "tflite", str(ckpt), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2
    with pytest.raises(ModelError, match="not an exported icechart network"):
        read_contract(bad)


def test_a_network_with_a_stem_is_refused(tmp_path: Path) -> None:
    model = load_model(str(random_checkpoint(tmp_path / "m.safetensors")))
    net = build_net({"in_channels": model.net.in_channels, "filters": [8, 8], "stem": 2, "stem_factor": 10})  # type: ignore[union-attr]
    stem_model = LoadedModel(net=net, meta=model.meta, model_id="stemmed", sha256="0" * 64, path=Path("x"))  # type: ignore[union-attr]
    with pytest.raises(ModelError, match="stem"):
        export_model(stem_model, "torchscript", tmp_path / "s.pt")
    assert not (tmp_path / "s.pt").exists()
