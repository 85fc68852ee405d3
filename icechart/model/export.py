"""Export of a checkpoint's network to TorchScript or ONNX, with the model contract inside.

The exported graph is the network alone: input ``x`` ``(N, C, H, W)`` float32, the model's
channels in its order, normalised with its statistics (NaN set to 0 after normalisation, as
:mod:`icechart.features` does); outputs ``SIC``, ``SOD``, ``FLOE`` logits ``(N, K, H, W)`` at the
input's size (SIC: one channel of regression in class units when ``sic_mode`` is regression).
Any H and W work, as in PyTorch. Turning the outputs into charts (softmax, bilinear upsampling to
the SAR grid, the decision rule) is :mod:`icechart.infer.decide`'s and not part of the file.

What a consumer needs to prepare the input and read the outputs travels in the file (JSON,
:func:`contract_document`): channels, normalisation, downscaling factor and method, coarse-input
interpolation, SAR fill, SIC mode, the class tables (names per chart, table version), the source
checkpoint's id and sha256 and its full metadata. TorchScript: the extra file ``icechart.json``
(``torch.jit.load(f, _extra_files={"icechart.json": ""})``); ONNX: the metadata property
``icechart`` (``onnxruntime.InferenceSession(f).get_modelmeta().custom_metadata_map``).
:func:`read_contract` reads either back.

Each export is checked before it is kept: the exported file is run on a random input of an odd
size and must give the PyTorch network's outputs (TorchScript exactly, ONNX within 1e-4; ONNX only
where onnxruntime is installed). ONNX needs the ``export`` extra (onnx, onnxscript, onnxruntime).
Ensembles (export each member) and networks with a learned downscaling stem (its full-resolution
input path is not part of the graph) are refused (69). torch 2.13 deprecates TorchScript in favour
of ``torch.export``; ONNX is the format to archive.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from icechart.errors import ConfigError, ModelError, OutputError

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
CONTRACT_FILE = "icechart.json"
"""TorchScript extra file holding the contract."""
CONTRACT_KEY = "icechart"
"""ONNX metadata property holding the contract."""
ONNX_TOLERANCE = 1e-4
CHECK_SIZE = (37, 45)
"""Input size of the check run (odd: the U-Net's pads at every level are exercised)."""


@dataclass
class ExportResult:
    path: Path
    format: str
    model_id: str
    max_abs_diff: float | None
    """Largest output difference of the check run (None: not checked, no onnxruntime)."""


def contract_document(model: Any) -> dict[str, Any]:
    """The JSON document stored in an exported file."""
    from icechart._version import __version__
    from icechart.classes import CHARTS, CLASS_NAMES

    c = model.contract
    return {
        "format_version": 1,
        "model_id": model.model_id,
        "sha256": model.sha256,
        "icechart_version": __version__,
        "input": {
            "name": "x",
            "layout": "N, C, H, W",
            "dtype": "float32",
            "channels": list(c.channels),
            "normalised": c.norm is not None,
            "norm": c.norm,
            "nan_after_normalisation": 0.0,
            "factor": c.factor,
            "downscale_method": c.downscale_method,
            "interp": c.interp,
            "sar_fill": c.sar_fill,
        },
        "outputs": {
            "names": list(CHARTS),
            "kind": "logits; SIC is regression in class units (0..10) when sic_mode is regression",
            "sic_mode": c.sic_mode,
            "classes": {chart: list(CLASS_NAMES[chart]) for chart in CHARTS},
            "class_table_version": c.class_table_version,
        },
        "meta": model.meta,
    }


class Outputs(torch.nn.Module):
    """The U-Net with its outputs as a tuple (SIC, SOD, FLOE), as both formats want."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.net = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(x)
        return out["SIC"], out["SOD"], out["FLOE"]  # icechart.classes.CHARTS


def _wrapper(net: Any) -> Outputs:
    return Outputs(net).eval()


def _need(module: str, fmt: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"--format {fmt} needs the {module} package (pip install 'icechart-mmseaice[export]')")


def export_model(spec: Any, fmt: str, out: str | Path, *, overwrite: bool = False) -> ExportResult:
    """Export the network of checkpoint ``spec`` (anything :func:`icechart.load_model` takes) to
    ``out`` in format ``fmt`` (``torchscript`` or ``onnx``), checked against PyTorch.

    Raises
    ------
    ModelError
        Missing or corrupt model, an ensemble, a network with a stem (69).
    ConfigError
        Unknown format, or ONNX without its packages (78).
    OutputError
        ``out`` exists without ``overwrite`` (73), or cannot be written.
    ModelError
        The exported network does not give PyTorch's outputs (69).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: exists; use --overwrite to replace it")
    if fmt == "onnx":
        _need("onnx", fmt)
        _need("onnxscript", fmt)
    from icechart.atomic import atomic_path
    from icechart.model.ensemble import EnsembleModel
    from icechart.model.load import load_model

    model = load_model(spec, device="cpu")
    if isinstance(model, EnsembleModel):
        raise ModelError(f"{model.model_id}: an ensemble has no single network; export each member's checkpoint")
    if getattr(model.net, "stem", None) is not None:
        raise ModelError(
            f"{model.model_id}: a network with a learned downscaling stem cannot be exported (its "
            "full-resolution input path is not part of the graph)"
        )
    doc = json.dumps(contract_document(model))
    net = model.net.eval()
    x = torch.randn(1, net.in_channels + net.stem_channels, *CHECK_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = _wrapper(net)(x)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out.parent}: cannot create the directory ({exc.strerror})") from exc
    with atomic_path(out) as tmp:
        if fmt == "torchscript":
            with warnings.catch_warnings():  # torch.jit is deprecated (in favour of torch.export)
                warnings.simplefilter("ignore", DeprecationWarning)
                scripted = torch.jit.script(_wrapper(net))
                torch.jit.save(scripted, str(tmp), _extra_files={CONTRACT_FILE: doc})
                with torch.no_grad():
                    got = torch.jit.load(str(tmp))(x)
            diff: float | None = max(float((a - b).abs().max()) for a, b in zip(want, got))
            tol = 0.0
        else:
            diff, tol = _onnx(net, x, want, tmp, doc), ONNX_TOLERANCE
        if diff is not None and not diff <= tol:
            raise ModelError(f"{model.model_id}: the exported {fmt} network differs from PyTorch's by {diff:.3g}")
    logger.info("exported %s to %s (%s; check: max |difference| %s)", model.model_id, out, fmt,
                "not run (no onnxruntime)" if diff is None else f"{diff:.3g}")  # fmt: skip
    return ExportResult(out, fmt, model.model_id, diff)


def _onnx(net: Any, x: Any, want: Any, tmp: Path, doc: str) -> float | None:
    """Write the ONNX file to ``tmp``; the check run's largest difference (None without onnxruntime)."""
    import numpy as np
    import onnx

    graph_net = copy.deepcopy(net)
    for m in graph_net.modules():  # no branch on the input size in the traced graph
        if hasattr(m, "always_pad"):
            m.always_pad = True
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=1), 3: torch.export.Dim("width", min=1)}
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed" and the like
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(_wrapper(graph_net), (x,), input_names=["x"], output_names=["SIC", "SOD", "FLOE"],
                                     dynamic_shapes={"x": dims}, dynamo=True, verbose=False)  # fmt: skip
    finally:
        quiet.setLevel(level)
    proto = prog.model_proto  # type: ignore[union-attr]
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONTRACT_KEY, doc
    onnx.save(proto, str(tmp))
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy()})
    return max(float(np.abs(a.numpy() - b).max()) for a, b in zip(want, got))


def read_contract(path: str | Path) -> dict[str, Any]:
    """The contract document of an exported file (TorchScript or ONNX, by content).

    Raises
    ------
    ModelError
        Not an exported icechart network (69).
    """
    import zipfile

    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            extra = {CONTRACT_FILE: ""}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.load(str(path), _extra_files=extra)
            text = extra[CONTRACT_FILE]
        else:
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            text = props.get(CONTRACT_KEY, "")
        doc = json.loads(text)
    except Exception as exc:
        raise ModelError(f"{path}: not an exported icechart network ({type(exc).__name__})") from exc
    if not isinstance(doc, dict) or "input" not in doc:
        raise ModelError(f"{path}: not an exported icechart network (no contract)")
    return doc
