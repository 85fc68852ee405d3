"""Checkpoints: safetensors weights + JSON metadata (the input contract), with sha256.

A checkpoint is a ``.safetensors`` file: the network's state dict as tensors and, in the
header's string metadata under ``"icechart"``, a JSON object with the keys in :data:`META_KEYS`
(channels, downscale factor and method, interpolation, normalisation, architecture, class table
version, config, validation scores, software version, training scenes). Loading never executes
code (safetensors; a ``.pt`` file is read with ``torch.load(weights_only=True)``).

:func:`load_checkpoint` accepts a weights file, a training run directory (its
``best.safetensors``) or a shipped model directory ``models/<id>/`` whose ``model.toml`` gives
the weights file, the model id and the weights' sha256 (checked). ``model.toml`` keys, at the
top level or in a ``[model]`` table::

    [model]
    id = "mmseaice-s1-v1"              # default: the directory name
    weights = "model.safetensors"       # default
    sha256 = "<64 hex>"                 # optional; a mismatch is ModelError (69)
"""

from __future__ import annotations

import hashlib
import json
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from icechart.atomic import atomic_path
from icechart.classes import CLASS_TABLE_VERSION
from icechart.errors import ModelError, first_line
from icechart.hashing import sha256_file
from icechart.model.contract import ModelContract, contract_of
from icechart.model.unet import UNet, build_net

logger = logging.getLogger(__name__)

META_KEY = "icechart"
DIGEST_KEY = "icechart.weights_sha256"
FORMAT_VERSION = 1
META_KEYS = (
    "channels",
    "factor",
    "downscale_method",
    "interp",
    "norm",
    "arch",
    "class_table_version",
    "config",
    "val_scores",
    "software_version",
    "trained_on",
)
REQUIRED_META = ("channels", "factor", "norm", "arch", "class_table_version")
RUN_DIR_WEIGHTS = ("best.safetensors", "last.safetensors")
MODEL_CARD = "model.toml"


@dataclass
class LoadedModel:
    """A network ready for inference with the metadata it was trained with."""

    net: UNet
    meta: dict[str, Any]
    model_id: str
    sha256: str
    path: Path

    @property
    def contract(self) -> ModelContract:
        """The typed input/output contract of :attr:`meta` (parsed once, then cached)."""
        return contract_of(self)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_checkpoint(path: str | Path, net: nn.Module, meta: Mapping[str, Any]) -> str:
    """Write ``net``'s weights and ``meta`` to a safetensors file atomically.

    Parameters
    ----------
    path
        Destination ``.safetensors`` file.
    net
        The network (a DDP wrapper is unwrapped).
    meta
        Metadata; ``arch`` and ``class_table_version`` are filled in when absent.

    Returns
    -------
    str
        The sha256 (hex) of the written file.
    """
    from safetensors.torch import save_file

    net = getattr(net, "module", net)
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    full = dict(meta)
    if "arch" not in full and isinstance(net, UNet):
        full["arch"] = net.arch
    full.setdefault("class_table_version", CLASS_TABLE_VERSION)
    full["format_version"] = FORMAT_VERSION
    text = json.dumps(_jsonable(full), sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: text, DIGEST_KEY: tensors_sha256(state)})
    return sha256_file(path)


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors (names, dtypes, shapes, bytes), stored in the file's header so a
    corrupted checkpoint is caught even when no model card pins the file's sha256."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _resolve(path: Path) -> tuple[Path, str | None, str | None]:
    """(weights file, model id from a model card, expected sha256 from a model card)."""
    if not path.exists():
        raise ModelError(f"{path}: no such model file or directory")
    if path.is_file():
        return path, None, None
    card = path / MODEL_CARD
    if card.is_file():
        try:
            with open(card, "rb") as fh:
                info = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ModelError(f"{card}: unreadable model card ({exc})") from exc
        model = info.get("model", info)
        if not isinstance(model, dict):
            raise ModelError(f"{card}: [model] must be a table")
        weights = model.get("weights", "model.safetensors")
        sha = model.get("sha256")
        mid = model.get("id", path.name)
        check_model_id(mid, where=card)
        return _card_weights(card, weights), str(mid), _card_sha256(card, sha)
    for name in RUN_DIR_WEIGHTS:
        if (path / name).is_file():
            return path / name, None, None
    raise ModelError(
        f"{path}: no model here (expected {MODEL_CARD}, or a training run's best.safetensors)"
    )


def check_model_id(value: object, *, where: str | Path) -> str:
    """``value`` when it is a safe model id (:data:`icechart.io.contract.MODEL_ID_RE`), else
    ModelError (69): the id names every product file, so ``..``, ``/``, newlines and empty ids
    are refused when the model is loaded, before anything is written."""
    from icechart.io.contract import MODEL_ID_RE, safe_model_id

    if not safe_model_id(value):
        raise ModelError(
            f"{where}: model id {value!r} is not a safe name (1-64 of A-Z a-z 0-9 . _ + -, "
            f"matching {MODEL_ID_RE.pattern}, no '..')"
        )
    return str(value)


def _card_weights(card: Path, weights: object) -> Path:
    """The model card's ``weights``: a relative path that stays inside the card's directory."""
    if not isinstance(weights, str) or not weights or "\0" in weights:
        raise ModelError(f"{card}: `weights` must be a file name, got {weights!r}")
    rel = Path(weights)
    root = card.parent.resolve()
    target = (card.parent / rel).resolve()
    if rel.is_absolute() or not target.is_relative_to(root):
        raise ModelError(f"{card}: `weights` {weights!r} points outside the model directory")
    return card.parent / rel


def _card_sha256(card: Path, sha: object) -> str | None:
    if sha is None or sha == "":
        return None
    text = str(sha).lower() if isinstance(sha, str) else ""
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise ModelError(f"{card}: `sha256` must be 64 hex digits, got {sha!r}")
    return text


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the state dict and metadata of a weights file without building the network."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file")
    if path.suffix == ".pt":
        import pickle

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            state, meta = obj["model"], json.loads(obj["meta"])
        except pickle.UnpicklingError:
            raise ModelError(
                f"{path}: not a weights-only checkpoint (it holds pickled objects, which could run "
                "code); refusing to load it"
            ) from None
        except Exception as exc:
            raise ModelError(f"{path}: corrupt or unreadable checkpoint ({first_line(exc, 160)})") from exc
        return state, meta
    from safetensors import safe_open

    try:
        state = {}
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            for k in fh.keys():
                state[k] = fh.get_tensor(k)
        meta = json.loads(header[META_KEY])
        digest = header.get(DIGEST_KEY)
    except KeyError:
        raise ModelError(f"{path}: not an icechart checkpoint (no `{META_KEY}` metadata)") from None
    except Exception as exc:
        raise ModelError(f"{path}: corrupt or unreadable checkpoint ({first_line(exc, 160)})") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: checkpoint metadata is not a JSON object")
    if digest is not None and tensors_sha256(state) != digest:
        raise ModelError(f"{path}: corrupt checkpoint (weights do not match their recorded sha256)")
    return state, meta


MAX_FACTOR = 64
"""Largest downscale factor accepted from metadata (MMSeaIce uses 10; 64 is 5 km pixels)."""
MAX_FILTERS = 1024
"""Most filters of one U-Net stage accepted from metadata (MMSeaIce: 32 ... 128)."""
MAX_STAGES = 8
MAX_CHANNELS = 256


def _bad(where: str | Path, what: str) -> ModelError:
    return ModelError(f"{where}: bad checkpoint metadata: {what}")


def check_meta_values(meta: Mapping[str, Any], *, where: str | Path) -> None:
    """Bounds and types of the metadata, checked before the network is built or any array of
    a size the metadata declares is allocated (ModelError, 69): known channels, a factor in
    1..:data:`MAX_FACTOR`, finite normalisation with a positive std per channel, known
    downscale and interpolation methods, and an architecture of at most :data:`MAX_STAGES`
    stages of 1..:data:`MAX_FILTERS` filters whose input channels match."""
    from icechart.io.contract import ALL_CHANNELS
    from icechart.model.unet import SIC_MODES

    ch = meta.get("channels")
    if not isinstance(ch, list) or not 1 <= len(ch) <= MAX_CHANNELS or not all(isinstance(c, str) for c in ch):
        raise _bad(where, f"`channels` must be a list of 1..{MAX_CHANNELS} names")
    unknown = [c for c in ch if c not in ALL_CHANNELS]
    if unknown:
        raise _bad(where, f"unknown input channel(s) {', '.join(map(repr, unknown[:3]))}")
    f = meta.get("factor")
    if isinstance(f, bool) or not isinstance(f, int) or not 1 <= f <= MAX_FACTOR:
        raise _bad(where, f"`factor` must be an integer 1..{MAX_FACTOR}, got {f!r}")
    for key, choices in (("downscale_method", ("mean", "subsample")), ("interp", ("bilinear", "nearest"))):
        if key in meta and meta[key] not in choices:
            raise _bad(where, f"`{key}` must be one of {', '.join(choices)}, got {meta[key]!r}")
    norm = meta.get("norm")
    if not isinstance(norm, Mapping):
        raise _bad(where, "`norm` must be a table with `mean` and `std` per channel")
    arch0 = meta.get("arch")
    stem = arch0.get("stem", 0) if isinstance(arch0, Mapping) else 0
    if isinstance(stem, bool) or not isinstance(stem, int) or not 0 <= stem <= 256:
        raise _bad(where, f"`arch.stem` must be an integer 0..256, got {stem!r}")
    n_in = len(ch) + stem  # a learned stem's channels follow the features (icechart.model.stem)
    for key in ("mean", "std"):
        v = norm.get(key)
        if not isinstance(v, list) or len(v) != n_in or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v
        ):
            raise _bad(where, f"`norm.{key}` must be {n_in} finite numbers (one per channel)")
    if not all(x > 0 for x in norm["std"]):
        raise _bad(where, "`norm.std` must be positive")
    arch = meta.get("arch")
    if not isinstance(arch, Mapping):
        raise _bad(where, "`arch` must be a table")
    if arch.get("in_channels") != len(ch):
        raise _bad(where, f"`arch.in_channels` {arch.get('in_channels')!r} is not the {len(ch)} channels")
    filt = arch.get("filters", [1])
    if not isinstance(filt, list) or not 1 <= len(filt) <= MAX_STAGES or not all(
        isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= MAX_FILTERS for x in filt
    ):
        raise _bad(where, f"`arch.filters` must be 1..{MAX_STAGES} integers 1..{MAX_FILTERS}, got {filt!r}")
    if arch.get("sic_mode", "regression") not in SIC_MODES:
        raise _bad(where, f"`arch.sic_mode` must be one of {', '.join(SIC_MODES)}")


def check_finite(state: Mapping[str, torch.Tensor], *, where: str | Path) -> None:
    """ModelError (69) when a floating-point tensor holds NaN or infinity: such weights
    predict garbage (all zeros, all one class) without any error."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelError(f"{where}: weights `{name}` hold NaN or infinity; the checkpoint is unusable")


def check_meta(meta: Mapping[str, Any], *, where: str | Path) -> None:
    """Raise ModelError when required keys are missing, values are out of bounds
    (:func:`check_meta_values`) or the class tables differ."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ModelError(f"{where}: checkpoint metadata lacks {', '.join(missing)}")
    check_meta_values(meta, where=where)
    ver = meta.get("class_table_version")
    if ver != CLASS_TABLE_VERSION:
        raise ModelError(
            f"{where}: trained with class tables {ver!r}, this icechart uses "
            f"{CLASS_TABLE_VERSION!r}; retrain or use a matching icechart version"
        )


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a network for inference.

    Parameters
    ----------
    path
        A ``.safetensors`` file, a training run directory, or a model directory holding
        ``model.toml``.
    device
        Where to put the network.

    Returns
    -------
    LoadedModel
        The network in eval mode on ``device``, its metadata, id and weights sha256.

    Raises
    ------
    ModelError
        Missing, corrupt, sha256 mismatch, class-table mismatch, or weights not matching the
        architecture (69).
    """
    weights, card_id, expected = _resolve(Path(path))
    if not weights.is_file():
        raise ModelError(f"{weights}: weights file missing")
    sha = sha256_file(weights)
    if expected and sha != expected:
        raise ModelError(
            f"{weights}: sha256 {sha[:12]}... does not match the model card's {expected[:12]}...; "
            "the file is corrupt or was replaced"
        )
    state, meta = read_checkpoint(weights)
    check_meta(meta, where=weights)
    check_finite(state, where=weights)
    try:
        net = build_net(meta["arch"])
        net.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"{weights}: weights do not match the architecture ({first_line(exc, 160)})") from exc
    net.to(device).eval()
    model_id = card_id or f"ckpt-{sha[:12]}"
    return LoadedModel(net=net, meta=meta, model_id=model_id, sha256=sha, path=weights)


def predict_logits(
    net: nn.Module, x: np.ndarray, *, device: str | torch.device | None = None
) -> dict[str, np.ndarray]:
    """Run ``net`` on one ``(C, H, W)`` (or ``(N, C, H, W)``) float32 stack; returns numpy
    outputs per chart with the batch axis removed for a single stack."""
    single = x.ndim == 3
    t = torch.from_numpy(np.ascontiguousarray(x[None] if single else x, dtype=np.float32))
    if device is None:
        device = next(net.parameters()).device
    with torch.inference_mode():
        out = net(t.to(device))
    res = {k: v.float().cpu().numpy() for k, v in out.items()}
    return {k: v[0] for k, v in res.items()} if single else res
