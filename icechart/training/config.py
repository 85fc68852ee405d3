"""The ``[train]`` configuration: a frozen dataclass, presets, and command-line overrides.

A run recipe is a TOML file with a ``[train]`` table (contract.md "Configuration"), or the name
of a shipped preset (``icechart/presets/<name>.toml``, found with importlib.resources so an
installed wheel has them). Unknown keys are errors (78) with a "did you mean" hint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from icechart.config import from_dict, load_toml, unknown_key_error
from icechart.errors import ConfigError, InputMissingError
from icechart.io import contract as C

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]


INT_BOUNDS: dict[str, int] = {
    "factor": 64,
    "epochs": 100_000,
    "iterations": 1_000_000,
    "batch_size": 4096,
    "patch_size": 4096,
    "restart_epochs": 100_000,
    "runs": 100,
    "val_every": 100_000,
    "log_every": 1_000_000,
}
"""Upper bounds of the integer settings (78 beyond): far above any real run (the paper: 300
epochs of 500 iterations, batches of 16 patches of 256 px, factor 10), low enough that a typo
(``batch_size = 100000000``) fails at once instead of allocating or running for ever."""
FLOAT_FIELDS = (
    "sar_fill", "sic_weight", "sod_weight", "floe_weight", "min_labelled", "lr", "momentum",
    "weight_decay", "aug_prob", "max_rotation", "scale_min", "scale_max",
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (defaults: the paper's Model 1, reference/method.md)."""

    # data
    data: str = ""
    """Directory of AI4Arctic training scenes (``*.nc``); ``--data`` overrides."""
    out: str = "runs/train"
    """Run directory; ``-o/--out`` overrides."""
    cache_dir: str = ""
    """Preprocessing cache; empty: ``<out>/../.icechart-cache``."""
    val_scenes: tuple[str, ...] = ()
    """Scene ids (or file names) held out for validation; empty: ``n_val`` drawn at random."""
    n_val: int = 20
    val_seed: int = -1
    """Seed of the random split; -1: the run's seed."""
    val_split: Literal["shared", "per_run"] = "shared"
    """With ``runs`` > 1: ``shared``, one split for every member (the ensemble is calibrated
    on scenes none trained on); ``per_run``, each network draws its own split from its seed,
    as the paper did for its 20-run means."""
    # features
    channels: tuple[str, ...] = C.DEFAULT_CHANNELS
    factor: int = 10
    downscale_method: Literal["mean", "subsample"] = "mean"
    label_method: Literal["mode", "subsample"] = "mode"
    interp: Literal["bilinear", "nearest"] = "bilinear"
    sar_fill: float | None = None
    # network
    filters: tuple[int, ...] = (32, 32, 64, 64)
    sic_mode: Literal["regression", "classification"] = "regression"
    separate_decoders: bool = False
    stem: int = 0
    """Channels of the learned downscaling stem on the 80 m HH and HV (0: none; issue 12)."""
    # loss (method.md: 1 x MSE SIC + 3 x CE SOD + 3 x CE FLOE)
    sic_weight: float = 1.0
    sod_weight: float = 3.0
    floe_weight: float = 3.0
    # optimisation
    epochs: int = 300
    iterations: int = 500
    batch_size: int = 16
    patch_size: int = 256
    min_labelled: float = 0.01
    """Reject a patch whose fraction of labelled SIC pixels is below this."""
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.01
    restart_epochs: int = 20
    """Cosine annealing warm restart period in epochs (T0 = restart_epochs x iterations)."""
    # augmentation (each p = aug_prob; paper: 0.5)
    augment: bool = True
    aug_prob: float = 0.5
    max_rotation: float = 90.0
    scale_min: float = 0.9
    scale_max: float = 1.1
    cutmix: bool = True
    # runtime
    seed: int = 0
    device: Device = "auto"
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    """Mixed precision type on CUDA: float16 (with a GradScaler, whose overflow check reads one
    flag from the GPU per step) or bfloat16 (no scaler, no per-step host sync; Ampere and later)."""
    channels_last: bool = True
    workers: int = -1
    """DataLoader worker processes assembling batches; -1: auto (CUDA: min(8, CPUs - 1); CPU: 0,
    the training thread draws them)."""
    cache_workers: int = -1
    """Processes building missing cache entries in a single-process run; -1: auto
    (min(4, CPUs)). Under DDP every rank builds its share instead."""
    sync_batchnorm: bool = False
    """Under DDP on CUDA, synchronise batch-norm statistics across ranks (SyncBatchNorm)."""
    val_every: int = 1
    log_every: int = 50
    tensorboard: Literal["auto", "on", "off"] = "auto"
    """TensorBoard event files in ``<out>/tensorboard`` (rank 0; :mod:`icechart.training.tensorboard`):
    ``auto`` when the package is installed, ``on`` (78 without it), ``off``."""
    runs: int = 1
    calibrate: bool = True
    """Fit SOD/FLOE temperature scaling on the validation scenes at the end (stored in the
    checkpoint; with ``runs`` > 1 also the ensemble's, in ``ensemble.toml``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes copied into the checkpoint (e.g. the paper model number)."""

    def __post_init__(self) -> None:
        bad = [c for c in self.channels if c not in C.ALL_CHANNELS]
        if bad:
            raise ValueError(f"unknown channel(s) {', '.join(bad)}")
        if not self.channels:
            raise ValueError("channels is empty")
        for name, top in INT_BOUNDS.items():
            v = getattr(self, name)
            if not 1 <= v <= top:
                raise ValueError(f"`{name}` = {v!r} must lie in 1..{top}")
        if not 0 <= self.n_val <= 100_000:
            raise ValueError("`n_val` must lie in 0..100000")
        if not 0 <= self.stem <= 256:
            raise ValueError("`stem` must lie in 0..256")
        if not self.filters or len(self.filters) > 8 or min(self.filters) < 1 or max(self.filters) > 1024:
            raise ValueError("`filters` must be 1..8 integers in 1..1024")
        for name in FLOAT_FIELDS:
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"`{name}` = {v!r} must be a finite number")
        if not self.lr > 0:
            raise ValueError("`lr` must be > 0")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0 or not 0 <= self.min_labelled <= 1:
            raise ValueError("need 0 <= momentum < 1, weight_decay >= 0 and 0 <= min_labelled <= 1")
        if min(self.sic_weight, self.sod_weight, self.floe_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if not -1 <= self.workers <= 256:
            raise ValueError("`workers` must lie in 0..256, or -1 for auto")
        if not (self.cache_workers == -1 or 1 <= self.cache_workers <= 256):
            raise ValueError("`cache_workers` must lie in 1..256, or -1 for auto")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise ValueError("`amp_dtype` must be float16 or bfloat16")
        if self.tensorboard not in ("auto", "on", "off"):
            raise ValueError("`tensorboard` must be auto, on or off")
        if self.val_split not in ("shared", "per_run"):
            raise ValueError("`val_split` must be shared or per_run")
        if not 0 <= self.aug_prob <= 1:
            raise ValueError("`aug_prob` must lie in [0, 1]")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError("need 0 < scale_min <= scale_max")

    @property
    def arch(self) -> dict[str, Any]:
        arch: dict[str, Any] = {
            "in_channels": len(self.channels),
            "filters": list(self.filters),
            "sic_mode": self.sic_mode,
            "separate_decoders": self.separate_decoders,
        }
        if self.stem:
            arch.update(stem=self.stem, stem_factor=self.factor, stem_inputs=len(C.STEM_INPUTS))
        return arch

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    def replace(self, **kw: Any) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
# Changing these makes a checkpoint incompatible for --resume.
COMPAT_KEYS = (
    "channels", "factor", "downscale_method", "label_method", "interp", "filters", "sic_mode",
    "separate_decoders", "stem",
)  # fmt: skip



def preset_names() -> list[str]:
    """Names of the shipped presets (``icechart/presets/*.toml``)."""
    root = resources.files("icechart.presets")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def _preset_text(name: str) -> str | None:
    names = preset_names()
    match = [n for n in names if n == name] or [n for n in names if n.startswith(name + "-")]
    if len(match) != 1:
        return None
    return (resources.files("icechart.presets") / f"{match[0]}.toml").read_text(encoding="utf-8")


def read_recipe(config: str | Path) -> tuple[dict[str, Any], str]:
    """The ``[train]`` table of a file or a preset name, and where it came from."""
    path = Path(config)
    if path.suffix == ".toml" or path.exists():
        doc = load_toml(path)
        where = str(path)
    else:
        text = _preset_text(str(config))
        if text is None:
            raise InputMissingError(
                f"{config}: no such configuration file or preset (presets: {', '.join(preset_names())})"
            )
        doc = tomllib.loads(text)
        where = f"preset {config}"
    extra = [k for k in doc if k not in ("train", "predict", "score")]
    if extra:
        raise unknown_key_error(extra[0], ["train"], where=where)
    table = doc.get("train")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: no [train] table")
    return dict(table), where


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` overrides; values are TOML literals, else plain strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if key.startswith("train."):
            key = key[len("train.") :]
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key not in FIELDS:
            raise unknown_key_error(key, FIELDS, where="--set")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def load_train_config(
    config: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    **flags: Any,
) -> TrainConfig:
    """Build the run configuration: ``flags`` (non-None) > ``--set`` > file > defaults.

    Raises
    ------
    ConfigError
        Unknown key (with a hint), wrong type or invalid value (78).
    InputMissingError
        The file or preset does not exist (66).
    """
    table, where = read_recipe(config)
    base = from_dict(TrainConfig, table, where=where)  # the file's own keys and types
    sets = parse_set(list(overrides))
    base = from_dict(TrainConfig, {**table, **sets}, where="--set") if sets else base
    cli = {k: v for k, v in flags.items() if v is not None}
    if cli:
        base = from_dict(TrainConfig, {**table, **sets, **cli}, where="command line")
    return base
