"""CUDA paths, on a GPU only (skipped elsewhere; `scripts/gpu_check.sh` runs them with -m cuda):
AMP training and resume across AMP settings, validation on the device equal to the CPU's, the
decision rule on the GPU byte for byte the CPU's, an exported TorchScript network on the GPU,
pinned DataLoader workers, prediction on the GPU equal to the CPU's, OOM -> 75."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from icechart.cli.main import cli
from icechart.testing import labelled_scenes

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TINY = Path(__file__).parent / "conf" / "train_tiny.toml"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return labelled_scenes(tmp_path_factory.mktemp("cuda_scenes"), shape=(200, 180), seed=500)


def _train(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["train", "--config", str(TINY), "--device", "cuda", *args])
    return r.exit_code, r.output


def test_amp_training_and_resume_across_amp_settings(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = ["--data", str(scenes), "-o", str(out), "--set", "workers=2"]
    code, text = _train(*base, "--epochs", "1", "--set", "amp=false")
    assert code == 0, text
    code, text = _train(*base, "--epochs", "2", "--resume", "--set", "amp=true")  # was 69
    assert code == 0, text
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(np.isfinite(r["train_loss"]) for r in rows)
    code, text = _train(*base, "--epochs", "3", "--resume", "--set", "amp=false")
    assert code == 0, text


def test_validation_on_cuda_equals_cpu(scenes: Path, tmp_path: Path) -> None:
    from icechart.features import norm_from_stacks
    from icechart.model.unet import build_net
    from icechart.training.config import TrainConfig
    from icechart.training.data import find_scenes, load_all
    from icechart.training.validate import validate

    cfg = TrainConfig(data=str(scenes), out=str(tmp_path / "r"), factor=4, channels=("nersc_sar_primary", "nersc_sar_secondary"))
    val = load_all(find_scenes(scenes), cfg, tmp_path / "cache", full_labels=True)
    norm = norm_from_stacks([np.asarray(s.x) for s in val], cfg.channels)
    torch.manual_seed(0)
    net = build_net({"in_channels": 2, "filters": [4, 8], "sic_mode": "regression", "separate_decoders": False}).eval()
    cpu = validate(net, val, norm, factor=4, method="mean", sic_mode="regression", device=torch.device("cpu"))
    gpu = validate(net.cuda(), val, norm, factor=4, method="mean", sic_mode="regression", device=torch.device("cuda"))
    for k in ("SIC", "SOD", "FLOE"):
        assert gpu.scores[k] == pytest.approx(cpu.scores[k], abs=0.5)  # float kernels differ slightly


def test_decision_on_cuda_gives_the_cpu_bytes() -> None:
    """The one decision rule on the GPU (validation) gives the products' bytes for the same
    probabilities: elementwise float32 products and sums round alike on both."""
    from icechart.features import pixel_centres
    from icechart.infer.decide import Upsampler

    rng = np.random.default_rng(1)
    shape = (403, 517)
    centres = (pixel_centres(shape[0], 10, "mean"), pixel_centres(shape[1], 10, "mean"))
    h, w = centres[0].size, centres[1].size
    probs = {c: rng.dirichlet(np.ones(n), size=(h, w)).astype(np.float32).transpose(2, 0, 1).copy() for c, n in (("SOD", 6), ("FLOE", 7))}
    sic = rng.normal(3, 4, (h, w)).astype(np.float32)
    cpu = list(Upsampler(sic, probs, centres, shape).blocks(100))
    gpu = list(Upsampler(torch.from_numpy(sic).cuda(), {c: torch.from_numpy(p).cuda() for c, p in probs.items()}, centres, shape).blocks(100))
    for (_, c1, q1), (_, c2, q2) in zip(cpu, gpu):
        assert c2["SOD"].is_cuda
        for k in c1:
            np.testing.assert_array_equal(c1[k], c2[k].cpu().numpy())
        for k in q1:
            np.testing.assert_array_equal(q1[k], q2[k].cpu().numpy())


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_exported_torchscript_runs_on_cuda_like_pytorch(tmp_path: Path) -> None:
    """`icechart export --format torchscript`: the file, loaded onto the GPU, gives the
    PyTorch network's GPU outputs (an ONNX file is checked on CPU by the export itself)."""
    from icechart.model.export import export_model
    from icechart.model.load import load_model
    from icechart.testing import random_checkpoint

    ckpt = random_checkpoint(tmp_path / "m.safetensors", seed=6)
    res = export_model(str(ckpt), "torchscript", tmp_path / "m.pt")
    scripted = torch.jit.load(str(res.path), map_location="cuda")
    net = load_model(str(ckpt), device="cuda").net  # type: ignore[union-attr]
    x = torch.randn(2, net.in_channels, 97, 83, device="cuda")
    with torch.no_grad():
        want = net(x)
        got = scripted(x)
    for chart, g in zip(("SIC", "SOD", "FLOE"), got):
        assert g.is_cuda
        torch.testing.assert_close(g, want[chart], atol=1e-5, rtol=1e-5)


def test_predict_on_cuda_matches_cpu(scenes: Path, tmp_path: Path) -> None:
    import netCDF4

    from icechart.testing import random_checkpoint

    model = random_checkpoint(tmp_path / "m.safetensors")
    scene = sorted(scenes.glob("*.nc"))[0]
    outs = {}
    for dev in ("cpu", "cuda"):
        o = tmp_path / dev
        r = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(o), "--model", str(model), "--device", dev, "--formats", "netcdf,autoice"])
        assert r.exit_code == 0, r.output
        (nc,) = o.glob("*_autoice.nc")
        with netCDF4.Dataset(nc) as ds:
            outs[dev] = {k: ds[k][:] for k in ds.variables}
    for k, v in outs["cpu"].items():
        assert (v != 255).all()
        assert (v == outs["cuda"][k]).mean() > 0.99, k


def test_real_cuda_oom_is_75(scenes: Path, tmp_path: Path) -> None:
    # Activations no GPU holds (64 x 256 channels x 1024^2 float32 = 68 GiB a layer); the
    # batch itself is 2 GiB on the host.
    code, text = _train("--data", str(scenes), "-o", str(tmp_path / "oom"), "--epochs", "1", "--set", "iterations=1",
                        "--set", "batch_size=64", "--set", "patch_size=1024", "--set", "filters=[256, 256]")  # fmt: skip
    assert code == 75, text
    assert "out of GPU memory in training" in text


def test_training_step_never_syncs_with_the_host() -> None:
    """Augmentation, loss and backward of a step run with CUDA sync debugging set to error:
    any .item(), bool() or host copy of a device tensor would raise (11 did per step before)."""
    from icechart.model.unet import build_net
    from icechart.training.augment import AugmentSpec, augment_batch
    from icechart.training.loss import multitask_loss

    dev = torch.device("cuda")
    net = build_net({"in_channels": 3, "filters": [8, 16], "sic_mode": "regression", "separate_decoders": False}).to(dev)
    x = torch.randn(8, 3, 64, 64).pin_memory()
    y = torch.randint(0, 6, (8, 3, 64, 64), dtype=torch.uint8)
    y[:, :, :8] = 255
    y = y.pin_memory()
    gen = torch.Generator().manual_seed(0)
    xd, yd = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            xa, ya = augment_batch(xd, yd, AugmentSpec(p=0.9), gen)
            loss, terms = multitask_loss(net(xa), ya, as_tensors=True)
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert float(loss) >= 0 and set(terms) == {"SIC", "SOD", "FLOE"}
