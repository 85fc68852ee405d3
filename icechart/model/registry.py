"""The registry of shipped models: ``models/registry.toml`` and ``models/<id>/``.

Where the registry lives (first that exists):

1. ``$ICECHART_MODELS_DIR`` (a directory holding ``registry.toml``), for site-local models;
2. the copy packaged into an installed wheel, ``icechart/_models/`` (hatch force-include),
   found with :mod:`importlib.resources`;
3. the repository's top-level ``models/`` (a source checkout or an editable install).

Registry format::

    default = "mmseaice-s1-v1"            # the model `icechart predict` uses without --model

    [models."mmseaice-s1-v1"]
    dir = "mmseaice-s1-v1"                # optional, defaults to the id; holds model.toml
    description = "MMSeaIce U-Net, 16 channels, trained on ..."

Each model directory holds ``model.toml`` (weights file name, id, sha256: checked when loading,
see :mod:`icechart.model.checkpoint`) and a ``README.md`` model card. No torch here: the CLI
group calls :func:`default_model_id` for ``--version``.
"""

from __future__ import annotations

import logging
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from icechart.errors import ModelError

logger = logging.getLogger(__name__)

REGISTRY = "registry.toml"
ENV_DIR = "ICECHART_MODELS_DIR"


def models_root() -> Path:
    """The directory holding ``registry.toml`` (see the module docstring for the order)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    try:
        packaged = resources.files("icechart") / "_models"
        if packaged.is_dir() and (packaged / REGISTRY).is_file():
            return Path(str(packaged))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover - odd installs
        pass
    return Path(__file__).resolve().parents[2] / "models"  # the source tree: icechart/model/ -> repo


def load_registry(root: Path | None = None) -> dict[str, Any]:
    """The parsed registry (``{"default": ..., "models": {...}}``); empty when none exists."""
    root = root or models_root()
    path = root / REGISTRY
    if not path.is_file():
        return {"models": {}}
    try:
        with open(path, "rb") as fh:
            reg = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: unreadable model registry ({exc})") from exc
    reg.setdefault("models", {})
    if not isinstance(reg["models"], dict):
        raise ModelError(f"{path}: `models` must be a table of model ids")
    return reg


def model_ids() -> list[str]:
    """Ids of the shipped models."""
    return sorted(load_registry()["models"])


def default_model_id() -> str:
    """The id of the default shipped model.

    Raises
    ------
    ModelError
        No shipped model (a source checkout before a model was added), or a registry whose
        ``default`` names no model (69).
    """
    reg = load_registry()
    default = reg.get("default")
    if not default:
        raise ModelError(
            f"no shipped default model (no `default` in {models_root() / REGISTRY}); "
            "pass --model FILE|DIR (a checkpoint or a training run directory)"
        )
    if default not in reg["models"]:
        raise ModelError(f"{models_root() / REGISTRY}: default model {default!r} is not listed")
    return str(default)


def model_dir(model_id: str) -> Path:
    """The directory of a shipped model (ModelError when the id is unknown)."""
    reg = load_registry()
    entry = reg["models"].get(model_id)
    if entry is None:
        known = ", ".join(sorted(reg["models"])) or "none"
        raise ModelError(
            f"unknown model {model_id!r}: not a file, a directory or a shipped model id "
            f"(shipped: {known})"
        )
    return models_root() / str(entry.get("dir", model_id))


def registry_id(spec: str | Path | None) -> str | None:
    """The registry id ``spec`` names (None -> the default), or None for a path."""
    if spec is None:
        return default_model_id()
    if isinstance(spec, str) and not Path(spec).exists() and spec in load_registry()["models"]:
        return spec
    return None


def resolve_model(spec: str | Path | None) -> Path:
    """Where the weights of ``spec`` live.

    Parameters
    ----------
    spec
        None (the default shipped model), a shipped model id, a checkpoint file, a training run
        directory or a model directory.

    Returns
    -------
    Path
        A file or directory that :func:`icechart.model.checkpoint.load_checkpoint` accepts.

    Raises
    ------
    ModelError
        Unknown id, missing path, or no default model (69).
    """
    if spec is None:
        return model_dir(default_model_id())
    path = Path(spec)
    if path.exists():
        return path
    text = str(spec)
    if isinstance(spec, str) and os.sep not in text and not text.endswith((".safetensors", ".pt")):
        return model_dir(text)
    raise ModelError(f"{spec}: no such model file or directory")
