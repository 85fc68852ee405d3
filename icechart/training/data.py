"""Training data: the preprocessing cache, the train/validation split and the patch sampler.

The cache holds, per scene, the *unnormalised* downscaled feature stack (float32, NaN where no
SAR pixel of the block is valid) and the downscaled labels (uint8, 3 x H x W), as ``.npy`` files
opened memory-mapped. Entries are keyed by the scene file's resolved path, size and mtime, the
channels, factor and methods, and the version of the feature code
(:mod:`icechart.training.cache`), so any run with the same inputs reuses them: the reference
re-reads every scene at full resolution at each start-up (reference/method.md). Validation
scenes also keep their full-resolution labels (to score at label resolution). Labels are
checked against the class tables when an entry is built (65 naming the file).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from icechart.atomic import atomic_path
from icechart.classes import CHARTS, FILL
from icechart.errors import BadDataError, ConfigError, InputMissingError
from icechart.features import downscale_labels, raw_features
from icechart.io.scene import open_scene
from icechart.training.config import TrainConfig

logger = logging.getLogger(__name__)



@dataclass
class SceneData:
    """One cached scene: memory-mapped arrays plus identity."""

    scene_id: str
    path: Path
    shape: tuple[int, int]
    x: np.ndarray  # (C, h, w) float32, unnormalised, NaN = invalid
    y: np.ndarray  # (3, h, w) uint8 downscaled labels (SIC, SOD, FLOE)
    full_labels: np.ndarray | None = None  # (3, lines, samples) uint8, validation scenes only


def find_scenes(data: str | Path) -> list[Path]:
    """The scene files of a training directory (``*.nc``, sorted), or a single file."""
    root = Path(data) if str(data) else None
    if root is None:
        raise InputMissingError("no training data: give --data DIR or `data` in the [train] table")
    if not root.exists():
        raise InputMissingError(f"{root}: no such training data directory")
    paths = [root] if root.is_file() else sorted(p for p in root.glob("*.nc") if not p.name.startswith("."))
    if not paths:
        raise InputMissingError(f"{root}: no training scenes (*.nc files) found")
    return paths


def split_scenes(paths: list[Path], cfg: TrainConfig) -> tuple[list[Path], list[Path]]:
    """(train, validation) paths: the listed ``val_scenes``, or ``n_val`` drawn with a seed."""
    from icechart.io.contract import scene_id_from

    if cfg.val_scenes:
        by_key: dict[str, Path] = {}
        for p in paths:
            by_key[p.name] = p
            sid = scene_id_from(None, p)
            if sid:
                by_key[sid] = p
        missing = [v for v in cfg.val_scenes if v not in by_key]
        if missing:
            raise ConfigError(f"val_scenes: {', '.join(missing)} not among the training scenes")
        val = sorted({by_key[v] for v in cfg.val_scenes})
    else:
        n = cfg.n_val
        if n > len(paths) - 1:
            logger.warning(
                "n_val = %d but only %d scenes: validating on %d", n, len(paths), max(len(paths) - 1, 0)
            )
            n = max(len(paths) - 1, 0)
        seed = cfg.val_seed if cfg.val_seed >= 0 else cfg.seed
        idx = np.random.default_rng(seed).permutation(len(paths))[:n]
        val = sorted(paths[i] for i in idx)
    train = [p for p in paths if p not in val]
    if not train:
        raise InputMissingError("no training scenes left after holding out the validation scenes")
    return train, val


def default_cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out).resolve().parent / ".icechart-cache"


def feature_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings of a run that change a cached stack."""
    return {
        "channels": list(cfg.channels),
        "factor": cfg.factor,
        "method": cfg.downscale_method,
        "labels": cfg.label_method,
        "interp": cfg.interp,
        "sar_fill": cfg.sar_fill,
    }


def _key(path: Path, cfg: TrainConfig) -> tuple[str, dict[str, Any]]:
    from icechart.training.cache import entry_key, key_fields

    fields = key_fields(path, feature_settings(cfg))
    return entry_key(fields), fields


def _save_npy(dest: Path, a: np.ndarray) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, a)


def load_scene(path: Path, cfg: TrainConfig, cache: Path, *, full_labels: bool = False) -> SceneData:
    """Cached features/labels of one scene, building the entry when absent."""
    from icechart.training.cache import touch

    key, fields = _key(path, cfg)
    fx, fy, ff, fj = (cache / f"{key}.{s}" for s in ("x.npy", "y.npy", "full.npy", "json"))
    need_full = full_labels and not ff.exists()
    if not fj.exists() or need_full:
        t0 = time.perf_counter()
        with open_scene(path, channels=cfg.channels, sar_fill=cfg.sar_fill) as scene:
            if not scene.has_labels:
                raise BadDataError(
                    f"{path}: scene {scene.scene_id} has no labels (SIC/SOD/FLOE absent or all 255); "
                    "training needs labelled scenes"
                )
            for c in CHARTS:  # whole charts read once: Scene.labels refuses values outside the tables (65)
                scene.labels(c)  # (a class index out of range would crash the loss; CUDA: device assert)
            if not fj.exists():
                x = raw_features(scene, cfg.channels, factor=cfg.factor, method=cfg.downscale_method, interp=cfg.interp)
                y = np.stack([downscale_labels(scene, c, factor=cfg.factor, method=cfg.label_method) for c in CHARTS])
                _save_npy(fx, x)
                _save_npy(fy, y)
            if full_labels and not ff.exists():
                _save_npy(ff, np.stack([scene.labels(c) for c in CHARTS]))
            info = {"scene_id": scene.scene_id, "path": str(path), "shape": list(scene.shape),
                    "key_fields": fields, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with atomic_path(fj) as tmp:
            tmp.write_text(json.dumps(info))
        logger.debug("cached %s in %.2f s", path.name, time.perf_counter() - t0)
    info = json.loads(fj.read_text())
    touch(fj)
    return SceneData(
        scene_id=info["scene_id"],
        path=path,
        shape=(int(info["shape"][0]), int(info["shape"][1])),
        x=np.load(fx, mmap_mode="r"),
        y=np.load(fy, mmap_mode="r"),
        full_labels=np.load(ff, mmap_mode="r") if full_labels else None,
    )


def load_all(paths: list[Path], cfg: TrainConfig, cache: Path, *, full_labels: bool = False) -> list[SceneData]:
    """Load (building where needed) the cache entries of ``paths``."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from icechart.errors import OutputError

        raise OutputError(f"{cache}: cannot create the cache directory ({exc.strerror})") from exc
    return [load_scene(p, cfg, cache, full_labels=full_labels) for p in paths]


def label_stats(scenes: list[SceneData]) -> dict[str, Any]:
    """Label histograms of the downscaled training labels (for the trivial baseline)."""
    from icechart.classes import N_CLASSES

    out: dict[str, Any] = {}
    for k, chart in enumerate(CHARTS):
        hist = np.zeros(N_CLASSES[chart], np.int64)
        for s in scenes:
            v = np.asarray(s.y[k]).ravel()
            v = v[v != FILL]
            hist += np.bincount(v[v < N_CLASSES[chart]], minlength=N_CLASSES[chart])
        out[chart] = hist.tolist()
    return out


class PatchSampler:
    """Random patches (random scene, random offset) from cached scenes, numpy RNG.

    A patch whose labelled SIC fraction is below ``min_labelled`` is drawn again (up to 50
    times, then accepted). Scenes smaller than the patch are padded (NaN / FILL).

    **Streams.** Batch ``index`` of ``epoch`` on ``rank`` is drawn from its own generator,
    seeded with ``(seed, rank, epoch, index)`` (:func:`stream_seed`): every rank draws
    different patches, any worker process can assemble any batch, and a run resumed after
    epoch e draws exactly the batches the uninterrupted run would have, with no state to save.
    """

    def __init__(self, scenes: list[SceneData], *, patch: int, min_labelled: float, seed: int, rank: int = 0) -> None:
        self.scenes = scenes
        self.patch = patch
        self.min_labelled = min_labelled
        self.seed = int(seed)
        self.rank = int(rank)

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.patch
        for _ in range(50):
            s = self.scenes[int(rng.integers(len(self.scenes)))]
            h, w = s.y.shape[1:]
            r = int(rng.integers(0, max(h - p, 0) + 1))
            c = int(rng.integers(0, max(w - p, 0) + 1))
            y = np.asarray(s.y[:, r : r + p, c : c + p])
            if (y[0] != FILL).mean() * (y.shape[1] * y.shape[2]) / (p * p) >= self.min_labelled:
                break
        x = np.asarray(s.x[:, r : r + p, c : c + p], dtype=np.float32)
        if x.shape[1:] != (p, p):
            ph, pw = p - x.shape[1], p - x.shape[2]
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)), constant_values=np.nan)
            y = np.pad(y, ((0, 0), (0, ph), (0, pw)), constant_values=FILL)
        return x, y

    def batch(self, n: int, *, epoch: int = 0, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch``: ``(n, C, p, p)`` float32 (unnormalised) and
        ``(n, 3, p, p)`` uint8."""
        rng = np.random.default_rng(stream_seed(self.seed, self.rank, epoch, index))
        xs, ys = zip(*(self._one(rng) for _ in range(n)))
        return np.stack(xs), np.stack(ys)


def stream_seed(seed: int, rank: int, epoch: int, index: int, purpose: int = 0) -> int:
    """A 63-bit seed for one batch's random stream (``purpose`` 0: patches, 1: augmentation)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(rank), int(epoch), int(index), int(purpose)])
    return int(ss.generate_state(2, np.uint64)[0] >> np.uint64(1))


CACHE_STALL_S = 1800.0
"""A rank waiting for the others' cache entries gives up after this long without a new entry."""


def _failure_marker(cache: Path, key: str) -> Path:
    return cache / f".failed-{key}.json"


def _run_token() -> str:
    # torchrun sets TORCHELASTIC_RUN_ID per launch: markers of an earlier launch do not count.
    return os.environ.get("TORCHELASTIC_RUN_ID", "") + ":" + os.environ.get("MASTER_PORT", "")


def build_cache(
    items: list[tuple[Path, bool]],
    cfg: TrainConfig,
    cache: Path,
    *,
    rank: int = 0,
    world: int = 1,
    stall: float | None = None,
) -> int:
    """Build the missing cache entries of ``items`` (``(path, full_labels)``), rank ``rank``
    of ``world`` building every ``world``-th one, then wait until every rank's share exists.

    The wait is sized to the work, not to a collective's timeout: it lasts as long as new
    entries keep appearing, and fails after ``stall`` seconds (:data:`CACHE_STALL_S`) without
    one (75). A rank that cannot build its entry leaves a marker, so the others stop waiting
    and fail with the same error. Returns the number of entries this rank built.

    Raises
    ------
    BadDataError, InputMissingError
        A scene of this rank's share (or another rank's, from its marker) is unusable.
    TryAgainError
        The other ranks made no progress for ``stall`` seconds (75).
    """
    from icechart.errors import IcechartError, TryAgainError

    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from icechart.errors import OutputError

        raise OutputError(f"{cache}: cannot create the cache directory ({exc.strerror})") from exc

    def ready(path: Path, full: bool) -> tuple[str, bool]:
        key, _ = _key(path, cfg)
        return key, (cache / f"{key}.json").exists() and (not full or (cache / f"{key}.full.npy").exists())

    built = 0
    t0 = time.perf_counter()
    for path, full in items[rank::world]:
        key, ok = ready(path, full)
        if ok:
            continue
        _failure_marker(cache, key).unlink(missing_ok=True)
        try:
            load_scene(path, cfg, cache, full_labels=full)
        except IcechartError as exc:
            if world > 1:
                with atomic_path(_failure_marker(cache, key)) as tmp:
                    tmp.write_text(json.dumps({"message": exc.message, "exit_code": exc.exit_code, "run": _run_token()}))
            raise
        built += 1
    if built:
        logger.info("rank %d built %d cache entr%s in %.1f s", rank, built, "y" if built == 1 else "ies", time.perf_counter() - t0)
    if world == 1:
        return built
    limit = CACHE_STALL_S if stall is None else float(stall)
    pending = list(items)
    last_progress = time.monotonic()
    while True:
        still = []
        for path, full in pending:
            key, ok = ready(path, full)
            if ok:
                continue
            marker = _failure_marker(cache, key)
            if marker.exists():
                try:
                    m = json.loads(marker.read_text())
                except (OSError, ValueError):
                    m = None
                if m and m.get("run") == _run_token():
                    raise IcechartError(str(m["message"]), exit_code=int(m["exit_code"]))
            still.append((path, full))
        if not still:
            return built
        if len(still) < len(pending):
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > limit:
            raise TryAgainError(
                f"{cache}: rank {rank} waited {limit:.0f} s without a new cache entry from the other "
                f"ranks ({len(still)} of {len(items)} missing, e.g. {still[0][0].name}); did a rank die?"
            )
        pending = still
        time.sleep(0.2)


def cache_info(cache: Path) -> dict[str, Any]:
    """Number and size of cache entries (for logs)."""
    files = list(cache.glob("*.npy")) if cache.exists() else []
    return {"entries": len(list(cache.glob("*.json"))), "bytes": sum(f.stat().st_size for f in files)}


def writable_dir(path: Path) -> None:
    """Create ``path`` and check it is writable; OutputError (73) otherwise."""
    from icechart.errors import OutputError

    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{path}: run directory is not writable ({exc.strerror or exc})") from exc
