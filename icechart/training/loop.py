"""The training loop: ``train(config)`` -> run directory with best/last checkpoints.

Recipe (reference/method.md): random patches from the cached downscaled scenes, batch
augmentation on the device, 1 x MSE(SIC) + 3 x CE(SOD) + 3 x CE(FLOE), SGD (lr 1e-3, momentum
0.9, weight decay 0.01), cosine annealing with warm restarts every ``restart_epochs`` epochs
stepped per batch, validation each epoch at full label resolution, best checkpoint by combined
score. Mixed precision and channels-last on CUDA; DDP when started by ``torchrun``.

Data path: batches are assembled by DataLoader worker processes (``workers``; pinned memory
on CUDA, so the copies to the device are asynchronous) from per-batch random streams seeded
by (seed, rank, epoch, batch) (:class:`icechart.training.data.PatchSampler`): ranks draw
different patches, and ``--resume`` continues every rank's streams exactly. The step itself
never waits for the device: loss terms are summed on the device and read at logging
intervals only (with ``amp_dtype = "float16"`` the GradScaler still reads its overflow flag
each step; ``bfloat16`` needs no scaler); the share of the epoch spent waiting for data is
recorded per epoch.

DDP: the cold cache is built by all ranks in parallel, each its share, with a wait sized to
the work (:func:`icechart.training.data.build_cache`); ``sync_batchnorm`` on CUDA; only rank 0
writes. Out of memory is 75 (retry later), in training as in every command.

Run directory: ``config.json``, ``split.json``, ``metrics.jsonl`` (one line per epoch), ``val_metrics.csv``
(per epoch, chart, class and scene validation metrics, long format),
``best.safetensors`` (inference checkpoint), ``last.pt`` (resume state: weights, optimiser,
scheduler, grad scaler, RNG states, epoch), ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from icechart import __version__
from icechart.atomic import atomic_path
from icechart.classes import CHARTS, CLASS_TABLE_VERSION
from icechart.errors import ConfigError, ModelError, OutputError, TryAgainError, first_line, is_out_of_memory
from icechart.features import norm_from_stacks
from icechart.io import contract as C
from icechart.model.checkpoint import save_checkpoint
from icechart.model.unet import build_net, count_parameters
from icechart.training.augment import AugmentSpec, augment_batch
from icechart.training.config import COMPAT_KEYS, TrainConfig
from icechart.training.data import (
    PatchSampler,
    SceneData,
    build_cache,
    default_cache_dir,
    find_scenes,
    label_stats,
    load_all,
    split_scenes,
    stream_seed,
    writable_dir,
)
from icechart.training import tensorboard
from icechart.training.loss import multitask_loss
from icechart.training.validate import baseline, validate

logger = logging.getLogger(__name__)

SCORE_KEYS = ("SIC", "SOD", "FLOE", "combined")


@dataclass
class RunResult:
    """What one training run produced."""

    out: Path
    best_path: Path
    best_epoch: int
    scores: dict[str, float] | None
    baseline: dict[str, float] | None
    epochs_run: int
    seconds: float
    metrics: list[dict[str, Any]] = field(default_factory=list)


# -- helpers ---------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """The one device rule of every command (:func:`icechart.model.load.resolve_device`: ``cuda``
    without a GPU is exit 69), as a ``torch.device``."""
    from icechart.model.load import resolve_device as resolve

    return torch.device(resolve(name))


class _Dist:
    """torch.distributed state when started by torchrun (WORLD_SIZE > 1)."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        if self.active and not torch.distributed.is_initialized():
            dev = resolve_device(device_name)
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(self.local_rank)
            torch.distributed.init_process_group(backend=backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class _Progress:
    """A progress bar on a terminal, periodic log lines otherwise."""

    def __init__(self, total: int, *, epoch: int, epochs: int, every: int, enabled: bool) -> None:
        self.total, self.epoch, self.epochs, self.every = total, epoch, epochs, every
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def update(self, i: int, loss: float, patches: int) -> None:
        if not self.enabled:
            return
        rate = patches / max(time.perf_counter() - self.t0, 1e-9)
        if self.tty:
            frac = (i + 1) / self.total
            bar = "#" * int(30 * frac)
            sys.stderr.write(
                f"\repoch {self.epoch + 1}/{self.epochs} [{bar:<30}] {i + 1}/{self.total} "
                f"loss {loss:.4f} {rate:.1f} patches/s"
            )
            if i + 1 == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif (i + 1) % self.every == 0 or i + 1 == self.total:
            logger.info(
                "epoch %d/%d iteration %d/%d loss %.4f (%.1f patches/s)",
                self.epoch + 1, self.epochs, i + 1, self.total, loss, rate,
            )


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _compat(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    return {k: d[k] for k in COMPAT_KEYS}


def _rng_states(cfg: TrainConfig, world: int) -> dict[str, Any]:
    """What the random streams of the next epoch derive from (nothing else is needed to
    continue them: :func:`icechart.training.data.stream_seed`)."""
    return {"scheme": "per-batch seeds (seed, rank, epoch, batch)", "seed": cfg.seed, "world": world}


def resolve_workers(cfg: TrainConfig, device: torch.device) -> int:
    """DataLoader worker processes: ``workers``, or auto (CUDA: min(8, CPUs - 1); CPU: 0)."""
    if cfg.workers >= 0:
        return cfg.workers
    if device.type != "cuda":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def sync_batchnorm(net: nn.Module, *, enabled: bool, device: torch.device, world: int) -> nn.Module:
    """Batch norm synchronised across DDP ranks when asked for, on CUDA (SyncBatchNorm has no
    CPU kernel; on the CPU the option is ignored with a warning)."""
    if not enabled or world <= 1:
        return net
    if device.type != "cuda":
        logger.warning("sync_batchnorm ignored: SyncBatchNorm runs on CUDA devices only (device %s)", device)
        return net
    return nn.SyncBatchNorm.convert_sync_batchnorm(net)


def restore_scaler(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Load a saved GradScaler state, across AMP settings: a state saved with AMP off (CPU or
    ``amp = false``) is empty, and a resumed run with AMP on starts a fresh scale; a state
    saved with AMP on is dropped by a run with AMP off."""
    if not scaler.is_enabled() or not state:
        return
    scaler.load_state_dict(state)


class _Batches(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Batch (epoch, index) of one rank, as tensors: what the DataLoader workers assemble."""

    def __init__(self, sampler: PatchSampler, per_rank: int) -> None:
        self.sampler = sampler
        self.per_rank = per_rank

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        epoch, index = key
        xb, yb, fb = self.sampler.batch_full(self.per_rank, epoch=epoch, index=index)
        if fb is None:
            return torch.from_numpy(xb), torch.from_numpy(yb)
        return torch.from_numpy(xb), torch.from_numpy(yb), torch.from_numpy(fb)


class _EpochOrder(torch.utils.data.Sampler):  # type: ignore[type-arg]
    """Yields ``(epoch, 0..iterations-1)``; the loop sets ``epoch`` before each epoch (the
    sampler runs in the main process, so persistent workers see the new epoch)."""

    def __init__(self, iterations: int) -> None:
        self.iterations = iterations
        self.epoch = 0

    def __iter__(self) -> Any:
        return iter([(self.epoch, i) for i in range(self.iterations)])

    def __len__(self) -> int:
        return self.iterations


def _seed_worker(worker_id: int) -> None:
    """Per-worker seeding of the global generators (the batches have their own streams)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _batch_hash(x: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha1(x.numpy().tobytes()).hexdigest()[:12]


def _scores(res: Any) -> dict[str, float]:
    return {k: float(res.scores[k]) for k in SCORE_KEYS}


VAL_CSV = "val_metrics.csv"
VAL_COLUMNS = ("epoch", "scene", "chart", "class", "name", "metric", "value")


def validation_rows(epoch: int, res: Any) -> list[dict[str, Any]]:
    """Long-format rows of one validation: per chart (all scenes) score, R2, F1, accuracy and
    pixel count; per class precision, recall, F1 and support; per scene and chart the score."""
    from icechart.classes import CLASS_NAMES

    rows: list[dict[str, Any]] = []

    def add(scene: str, chart: str, metric: str, value: Any, cls: Any = "", name: str = "") -> None:
        rows.append({"epoch": epoch, "scene": scene, "chart": chart, "class": cls, "name": name,
                     "metric": metric, "value": value})  # fmt: skip

    for chart, st in res.charts.items():
        for metric, value in (("score", st.score(chart) * 100.0), ("r2", st.r2()), ("f1_weighted", st.f1_weighted()),
                              ("f1_macro", st.f1_macro()), ("accuracy", st.accuracy()), ("n_pixels", st.n)):  # fmt: skip
            add("all", chart, metric, value)
        pc = st.per_class()
        for i, name in enumerate(CLASS_NAMES[chart]):
            for metric in ("precision", "recall", "f1", "support"):
                v = pc[metric][i]
                add("all", chart, metric, int(v) if metric == "support" else float(v), i, name)
    add("all", "combined", "score", float(res.scores["combined"]))
    for sid in sorted(res.scenes):
        for chart, st in res.scenes[sid].items():
            if st.n:
                add(sid, chart, "score", st.score(chart) * 100.0)
                add(sid, chart, "n_pixels", st.n)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(VAL_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _read_csv(path: Path, *, max_epoch: int) -> list[dict[str, Any]]:
    import csv

    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if int(r["epoch"]) <= max_epoch]


def _meta(
    cfg: TrainConfig, norm: dict[str, Any], train: list[SceneData], val: list[SceneData],
    scores: dict[str, float] | None, epoch: int, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        **(extra or {}),
        "channels": list(cfg.channels),
        "factor": cfg.factor,
        "downscale_method": cfg.downscale_method,
        "label_method": cfg.label_method,
        "interp": cfg.interp,
        "sar_fill": cfg.sar_fill,
        "norm": norm,
        "arch": cfg.arch,
        "class_table_version": CLASS_TABLE_VERSION,
        "config": cfg.to_dict(),
        "val_scores": scores,
        "epoch": epoch,
        "software_version": __version__,
        "torch_version": torch.__version__,
        "trained_on": [s.scene_id for s in train],
        "validated_on": [s.scene_id for s in val],
    }


def _load_last(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: nothing to resume (no last.pt in the run directory)") from None
    except Exception as exc:
        raise ModelError(f"{path}: corrupt resume checkpoint ({first_line(exc, 160)})") from exc


# -- the loop --------------------------------------------------------------------------------
RUN_MARKERS = ("last.pt", "best.safetensors", "metrics.jsonl", "summary.json", "run-1")


def refuse_previous_run(out: Path, *, resume: bool, overwrite: bool) -> None:
    """A run directory that holds a run is continued (--resume) or replaced (--overwrite),
    never silently overwritten (OutputError, 73)."""
    if resume or overwrite or not out.is_dir():
        return
    found = [m for m in RUN_MARKERS if (out / m).exists()]
    if found:
        raise OutputError(
            f"{out}: holds a previous run ({found[0]}); use --resume to continue it or "
            "--overwrite to replace it"
        )


def train(
    cfg: TrainConfig, *, resume: bool = False, progress: bool = True, overwrite: bool = False,
    keep_process_group: bool = False,
) -> RunResult:
    """Train one network.

    Parameters
    ----------
    cfg
        The run configuration (``out`` is the run directory).
    resume
        Continue from ``out/last.pt`` with its optimiser, scheduler and RNG states.
    progress
        Show a progress bar (terminal) or periodic log lines.
    overwrite
        Replace a previous run in ``out`` (else OutputError unless ``resume``).
    keep_process_group
        Leave a DDP process group alive for a next run of the same process.

    Raises
    ------
    InputMissingError
        No training scenes (66).
    BadDataError
        A scene without labels or lacking a channel (65).
    OutputError
        The run directory cannot be written (73).
    ConfigError
        Resume from an incompatible checkpoint (78).
    ModelError
        A corrupt resume checkpoint (69).
    """
    t_start = time.perf_counter()
    refuse_previous_run(Path(cfg.out), resume=resume, overwrite=overwrite)
    dist = _Dist(cfg.device)
    try:
        return _train(cfg, dist, resume=resume, progress=progress, t_start=t_start)
    finally:
        # ``train_runs`` keeps the group for its next run: destroying and re-creating a process
        # group on the same torchrun store hangs (seen with gloo, one run in three).
        if not keep_process_group:
            dist.close()


def _train(cfg: TrainConfig, dist: _Dist, *, resume: bool, progress: bool, t_start: float) -> RunResult:
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist.active:
        device = torch.device("cuda", dist.local_rank)
    if dist.main:
        writable_dir(out)
        tensorboard.enabled(cfg.tensorboard)  # "on" without the package: 78 before any work
    last_path, best_path = out / "last.pt", out / "best.safetensors"
    state: dict[str, Any] | None = None
    if resume:
        state = _load_last(last_path)
        try:
            saved = json.loads(state["compat"])
        except Exception as exc:
            raise ModelError(f"{last_path}: corrupt resume checkpoint (no configuration)") from exc
        now = _compat(cfg)
        diff = [k for k in COMPAT_KEYS if saved.get(k) != now[k]]
        if diff:
            raise ConfigError(
                f"{last_path}: cannot resume: the checkpoint was trained with different "
                f"{', '.join(diff)} (e.g. {diff[0]} = {saved.get(diff[0])!r}, now {now[diff[0]]!r})"
            )

    # data: split (kept on resume), cache (built once by rank 0)
    paths = find_scenes(cfg.data)
    split_file = out / "split.json"
    if resume and split_file.exists():
        split = json.loads(split_file.read_text())
        by_name = {p.name: p for p in paths}
        try:
            train_p = [by_name[n] for n in split["train"]]
            val_p = [by_name[n] for n in split["val"]]
        except KeyError as exc:
            raise ConfigError(f"{split_file}: scene {exc.args[0]} is not in {cfg.data}") from None
    else:
        train_p, val_p = split_scenes(paths, cfg)
    cache = default_cache_dir(cfg)
    t0 = time.perf_counter()
    # Every rank builds its share of a cold cache and waits (as long as entries keep coming) for
    # the others' shares; the collective barrier after it is then immediate.
    procs = cfg.cache_workers if cfg.cache_workers > 0 else min(4, os.cpu_count() or 1)
    build_cache([(p, False) for p in train_p] + [(p, True) for p in val_p], cfg, cache,
                rank=dist.rank, world=dist.world, processes=procs)  # fmt: skip
    train_s = load_all(train_p, cfg, cache)
    val_s = load_all(val_p, cfg, cache, full_labels=True)
    dist.barrier()
    if dist.main:
        _write_json(split_file, {"train": [p.name for p in train_p], "val": [p.name for p in val_p],
                                 "train_ids": [s.scene_id for s in train_s], "val_ids": [s.scene_id for s in val_s]})
        _write_json(out / "config.json", cfg.to_dict())
    t_data = time.perf_counter() - t0
    norm = norm_from_stacks([np.asarray(s.x) for s in train_s], cfg.channels)
    from icechart.ood import input_range

    extra_meta: dict[str, Any] = {"input_range": input_range((np.asarray(s.x) for s in train_s), norm)}
    net_norm = norm
    if cfg.stem:
        # the stem's inputs: 80 m HH/HV statistics (every 4th line and sample suffices); its
        # outputs are appended to the features with mean 0, sd 1 (icechart.model.stem)
        extra_meta["stem_norm"] = norm_from_stacks(
            [np.asarray(s.full_sar[:, ::4, ::4]) for s in train_s if s.full_sar is not None], C.STEM_INPUTS
        )
        net_norm = {"mean": norm["mean"] + [0.0] * cfg.stem, "std": norm["std"] + [1.0] * cfg.stem}
    hist = label_stats(train_s)
    base = _scores(baseline(val_s, hist)) if (val_s and dist.main) else None
    logger.info(
        "%d training and %d validation scenes; data ready in %.1f s (cache %s)",
        len(train_s), len(val_s), t_data, cache,
    )
    if not val_s:
        logger.warning("no validation scenes: best.safetensors is the last epoch's network")

    # network, optimiser, schedule
    torch.manual_seed(cfg.seed)
    net: nn.Module = build_net(cfg.arch)
    use_cuda = device.type == "cuda"
    net = sync_batchnorm(net, enabled=cfg.sync_batchnorm, device=device, world=dist.world)
    amp = cfg.amp and use_cuda
    mem_format = torch.channels_last if (cfg.channels_last and use_cuda) else torch.contiguous_format
    net = net.to(device=device, memory_format=mem_format)  # type: ignore[call-overload]
    logger.info("network: %s, %d parameters, device %s%s", cfg.arch, count_parameters(net), device,
                " (AMP, channels-last)" if amp else "")
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.restart_epochs * cfg.iterations)
    amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)  # bf16 needs none
    sampler = PatchSampler(train_s, patch=cfg.patch_size, min_labelled=cfg.min_labelled, seed=cfg.seed, rank=dist.rank,
                           stem_factor=cfg.factor if cfg.stem else 0)
    gen = torch.Generator(device="cpu")
    start_epoch, best, best_epoch = 0, -math.inf, -1
    metrics: list[dict[str, Any]] = []
    val_rows: list[dict[str, Any]] = []
    best_scores: dict[str, float] | None = None
    if state is not None:
        try:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            restore_scaler(scaler, state.get("scaler") or {})
            start_epoch = int(state["epoch"])
            best, best_epoch = float(state["best"]), int(state["best_epoch"])
            best_scores = json.loads(state["best_scores"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelError(f"{last_path}: corrupt resume checkpoint ({type(exc).__name__}: {exc})") from exc
        if (out / "metrics.jsonl").exists():
            metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
            metrics = [m for m in metrics if m["epoch"] <= start_epoch]
        val_rows = _read_csv(out / VAL_CSV, max_epoch=start_epoch)
        logger.info("resuming %s after epoch %d", out, start_epoch)
    model: nn.Module = net
    if dist.active:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if use_cuda else None)
    mean = torch.tensor(norm["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor([s if s > 0 else 1.0 for s in norm["std"]], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    if cfg.stem:
        s_mean = torch.tensor(extra_meta["stem_norm"]["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        s_std = torch.tensor(extra_meta["stem_norm"]["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    spec = AugmentSpec(cfg.aug_prob, cfg.max_rotation, cfg.scale_min, cfg.scale_max, cfg.cutmix)
    per_rank = max(1, cfg.batch_size // dist.world)
    weights = (cfg.sic_weight, cfg.sod_weight, cfg.floe_weight)

    workers = resolve_workers(cfg, device)
    order = _EpochOrder(cfg.iterations)
    loader = torch.utils.data.DataLoader(
        _Batches(sampler, per_rank), batch_size=None, sampler=order, num_workers=workers,
        pin_memory=use_cuda, persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_seed_worker if workers > 0 else None,
    )  # fmt: skip
    debug = logger.isEnabledFor(logging.DEBUG)
    if dist.main:
        logger.info("data: %d loader worker(s)%s", workers, ", pinned memory" if use_cuda else "")

    tb = tensorboard.open_writer(cfg.tensorboard, out, start_epoch=start_epoch) if dist.main else None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            bar = _Progress(cfg.iterations, epoch=epoch, epochs=cfg.epochs, every=cfg.log_every, enabled=progress and dist.main)
            t_ep = time.perf_counter()
            wait = 0.0
            sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, SIC, SOD, FLOE
            order.epoch = epoch
            batches = iter(loader)
            try:
                for it in range(cfg.iterations):
                    t_w = time.perf_counter()
                    got = next(batches)
                    xb, yb = got[0], got[1]
                    wait += time.perf_counter() - t_w
                    if debug:
                        logger.debug("rank %d epoch %d batch %d sha1 %s", dist.rank, epoch + 1, it, _batch_hash(xb))
                    x = xb.to(device, non_blocking=True)
                    y = yb.to(device, non_blocking=True)
                    x = torch.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)
                    if len(got) > 2:  # learned stem: trained end to end, augmented with the features
                        fr = got[2].to(device, non_blocking=True)
                        fr = torch.nan_to_num((fr - s_mean) / s_std, nan=0.0, posinf=0.0, neginf=0.0)
                        x = torch.cat([x, net.run_stem(fr)[..., : x.shape[-2], : x.shape[-1]]], dim=1)  # type: ignore[operator]
                    if cfg.augment:
                        gen.manual_seed(stream_seed(cfg.seed, dist.rank, epoch, it, 1))
                        x, y = augment_batch(x, y, spec, gen)
                    x = x.contiguous(memory_format=mem_format)
                    with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp):
                        outputs = model(x)
                    loss, terms = multitask_loss(outputs, y, weights=weights, sic_mode=cfg.sic_mode, as_tensors=True)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    sched.step()
                    sums += torch.stack([loss.detach(), terms["SIC"], terms["SOD"], terms["FLOE"]]).to(sums.dtype)
                    if bar.enabled and ((it + 1) % cfg.log_every == 0 or it + 1 == cfg.iterations):
                        bar.update(it, float(sums[0]) / (it + 1), (it + 1) * per_rank * dist.world)  # the one sync
            except Exception as exc:
                if is_out_of_memory(exc):
                    raise TryAgainError(
                        f"out of {'GPU ' if use_cuda else ''}memory in training ({first_line(exc, 100)}); lower "
                        f"batch_size ({cfg.batch_size}) or patch_size ({cfg.patch_size}), or retry on a free device"
                    ) from exc
                raise
            total = sums.tolist()
            sums_d = {"loss": total[0], "SIC": total[1], "SOD": total[2], "FLOE": total[3]}
            secs = time.perf_counter() - t_ep
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": sums_d["loss"] / cfg.iterations,
                "loss_terms": {k: sums_d[k] / cfg.iterations for k in CHARTS},
                "data_wait_share": round(wait / max(secs, 1e-9), 4),
                "lr": opt.param_groups[0]["lr"],
                "seconds": round(secs, 3),
                "patches_per_s": round(cfg.iterations * per_rank * dist.world / max(secs, 1e-9), 3),
            }
            if dist.main:
                scores = None
                if val_s and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
                    t_v = time.perf_counter()
                    res = validate(net, val_s, net_norm, factor=cfg.factor, method=cfg.downscale_method,
                                   sic_mode=cfg.sic_mode, device=device, amp=amp,
                                   stem_norm=extra_meta.get("stem_norm"))  # fmt: skip
                    scores = _scores(res)
                    epoch_val_rows = validation_rows(epoch + 1, res)
                    val_rows.extend(epoch_val_rows)
                    _write_csv(out / VAL_CSV, val_rows)
                    row["val"] = scores
                    row["val_seconds"] = round(time.perf_counter() - t_v, 3)
                    logger.info(
                        "epoch %d/%d: loss %.4f, validation combined %.2f (SIC %.2f, SOD %.2f, FLOE %.2f)",
                        epoch + 1, cfg.epochs, row["train_loss"], scores["combined"], scores["SIC"],
                        scores["SOD"], scores["FLOE"],
                    )
                else:
                    logger.info("epoch %d/%d: loss %.4f", epoch + 1, cfg.epochs, row["train_loss"])
                improved = scores is not None and scores["combined"] > best
                if improved or not val_s:
                    best = scores["combined"] if scores is not None else best
                    best_epoch, best_scores = epoch + 1, scores
                    row["best"] = True
                    save_checkpoint(best_path, net, _meta(cfg, net_norm, train_s, val_s, scores, epoch + 1, extra_meta))
                metrics.append(row)
                _write_metrics(out / "metrics.jsonl", metrics)
                if tb is not None:
                    tb.epoch(row, epoch_val_rows if scores is not None else ())
                last = {
                    "model": net.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": _rng_states(cfg, dist.world),
                    "epoch": epoch + 1,
                    "best": best,
                    "best_epoch": best_epoch,
                    "best_scores": json.dumps(best_scores),
                    "compat": json.dumps(_compat(cfg)),
                    "meta": json.dumps(_meta(cfg, net_norm, train_s, val_s, scores, epoch + 1, extra_meta)),
                }
                with atomic_path(last_path) as tmp:
                    torch.save(last, tmp)
            else:
                # other ranks keep their own sampler state; only rank 0 writes
                pass
            dist.barrier()
    finally:
        if tb is not None:
            tb.close()

    calibration = None
    if dist.main and cfg.calibrate and val_s and best_path.is_file():
        calibration = _calibrate_best(best_path, val_s, device)
    seconds = time.perf_counter() - t_start
    result = RunResult(out=out, best_path=best_path, best_epoch=best_epoch, scores=best_scores,
                       baseline=base, epochs_run=cfg.epochs - start_epoch, seconds=seconds, metrics=metrics)
    if dist.main:
        _write_json(out / "summary.json", {
            "best_epoch": best_epoch, "scores": best_scores, "baseline": base,
            "seconds": round(seconds, 2), "data_seconds": round(t_data, 2),
            "epochs": cfg.epochs, "seed": cfg.seed, "best": str(best_path.name),
            "calibration": calibration,
        })
        logger.info("done in %.1f s; best epoch %d: %s", seconds, best_epoch, best_scores)
    return result


def _calibrate_best(best_path: Path, val_s: list[SceneData], device: torch.device) -> dict[str, Any] | None:
    """Fit temperature scaling of the best checkpoint on the validation scenes and store it in
    its metadata (:mod:`icechart.infer.calibrate`)."""
    from icechart.errors import BadDataError
    from icechart.infer.calibrate import fit_calibration, write_calibration
    from icechart.model.checkpoint import load_checkpoint

    from icechart.model.stem import with_stem

    model = load_checkpoint(best_path, device=device)
    try:
        cal = fit_calibration(model, ((s.scene_id, with_stem(model, np.asarray(s.x), full=s.full_sar), s.y) for s in val_s))
    except BadDataError as exc:
        logger.warning("no calibration: %s", exc.message)
        return None
    write_calibration(model, cal)
    logger.info("calibrated %s: temperatures %s", best_path.name, cal["temperature"])
    return cal


def _calibrate_ensemble(manifest: Path, cfg: TrainConfig, cache: str) -> dict[str, Any] | None:
    """Fit the ensemble's temperatures on the validation scenes all members share."""
    from icechart.errors import BadDataError
    from icechart.infer.calibrate import fit_calibration, write_calibration
    from icechart.model.ensemble import load_ensemble

    out = Path(cfg.out)
    splits = [json.loads((out / f"run-{k + 1}" / "split.json").read_text()) for k in range(cfg.runs)]
    names = set(splits[0]["val"]).intersection(*(set(s["val"]) for s in splits[1:]))
    train_names = set().union(*(set(s["train"]) for s in splits))
    names -= train_names  # never calibrate on a scene some member trained on
    if not names:
        logger.warning("no ensemble calibration: the members share no validation scene")
        return None
    paths = [p for p in find_scenes(cfg.data) if p.name in names]
    scenes = load_all(paths, cfg, Path(cache))
    model = load_ensemble(manifest, device=resolve_device(cfg.device))
    try:
        cal = fit_calibration(model, ((s.scene_id, s.x, s.y) for s in scenes))
    except BadDataError as exc:
        logger.warning("no ensemble calibration: %s", exc.message)
        return None
    write_calibration(model, cal)  # keeps [ensemble], replaces [calibration]
    logger.info("calibrated the ensemble: temperatures %s", cal["temperature"])
    return cal


def train_runs(
    cfg: TrainConfig, *, resume: bool = False, progress: bool = True, overwrite: bool = False
) -> tuple[list[RunResult], dict[str, Any]]:
    """Train ``cfg.runs`` networks with seeds ``seed, seed+1, ...`` (paper Table 4).

    With one run the run directory is ``cfg.out``; with N it holds ``run-1`` ... ``run-N``, a
    ``summary.json`` with mean and standard deviation of each score and an ``ensemble.toml``
    listing the member checkpoints.
    """
    if cfg.runs == 1:
        r = train(cfg, resume=resume, progress=progress, overwrite=overwrite)
        return [r], _summary([r])
    out = Path(cfg.out)
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes
    refuse_previous_run(out, resume=resume, overwrite=overwrite)
    if main:
        writable_dir(out)
    cache = str(default_cache_dir(cfg))
    results = []
    # val_split "shared": members share one train/validation split (and so normalisation
    # statistics): the ensemble is then validated and calibrated on scenes none of its members
    # trained on. "per_run": each member draws its split from its own seed (the paper's 20-run
    # means); the ensemble is then calibrated only on scenes no member trained on, if any.
    shared = cfg.val_split == "shared"
    val_seed = (cfg.val_seed if cfg.val_seed >= 0 else cfg.seed) if shared else -1
    for k in range(cfg.runs):
        sub = cfg.replace(seed=cfg.seed + k, out=str(out / f"run-{k + 1}"), runs=1, cache_dir=cache, val_seed=val_seed)
        do_resume = resume and (Path(sub.out) / "last.pt").exists()
        logger.info("run %d/%d (seed %d%s)", k + 1, cfg.runs, sub.seed, "" if shared else ", its own validation split")
        try:
            results.append(train(sub, resume=do_resume, progress=progress, overwrite=True, keep_process_group=True))
        except BaseException:
            _destroy_process_group()
            raise
    _destroy_process_group()  # one process group for all the runs
    summary = _summary(results)
    if not main:
        return results, summary
    _write_json(out / "summary.json", summary)
    from icechart.model.ensemble import write_manifest

    info: dict[str, Any] = {"seeds": [cfg.seed + k for k in range(cfg.runs)]}
    for key in SCORE_KEYS:
        if key in summary["mean"]:
            info[f"{key.lower()}_mean"] = round(summary["mean"][key], 4)
            info[f"{key.lower()}_sd"] = round(summary["sd"][key], 4)
    manifest = write_manifest(
        out / "ensemble.toml", [f"run-{k + 1}/best.safetensors" for k in range(cfg.runs)], info=info,
        comment="icechart ensemble: members trained with different seeds (icechart train --runs)",
    )  # fmt: skip
    if cfg.calibrate:
        cal = _calibrate_ensemble(manifest, cfg, cache)  # written into the manifest's [calibration]
        if cal is not None:
            summary["ensemble_calibration"] = cal
            _write_json(out / "summary.json", summary)
    return results, summary


def _summary(results: list[RunResult]) -> dict[str, Any]:
    scored = [r.scores for r in results if r.scores]
    mean: dict[str, float] = {}
    sd: dict[str, float] = {}
    for key in SCORE_KEYS:
        vals = np.array([s[key] for s in scored], dtype=np.float64)
        if vals.size:
            mean[key] = float(vals.mean())
            sd[key] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
    return {
        "runs": [{"out": str(r.out), "best_epoch": r.best_epoch, "scores": r.scores, "baseline": r.baseline,
                  "seconds": round(r.seconds, 2)} for r in results],
        "mean": mean,
        "sd": sd,
        "baseline": results[0].baseline if results else None,
    }
