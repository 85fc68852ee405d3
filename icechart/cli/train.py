"""``icechart train``: train the MMSeaIce U-Net from a TOML recipe or a shipped preset."""

from __future__ import annotations

import logging
import os

import click

from icechart.cli.options import device_opt

logger = logging.getLogger(__name__)


@click.command()
@click.option("--config", "config", required=True, help="Run recipe: a TOML file with a [train] table, or a preset name (model-1 ... model-9, quick-cpu).")
@click.option("--data", type=str, default=None, help="Directory of labelled AI4Arctic training scenes (*.nc); overrides `data`.")
@click.option("-o", "--out", type=str, default=None, help="Run directory (checkpoints, metrics, split); overrides `out`.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a [train] key (TOML value), repeatable.")
@click.option("--resume", is_flag=True, help="Continue from RUNDIR/last.pt with its optimiser, scheduler and RNG states.")
@click.option("--overwrite", is_flag=True, help="Replace a previous run in RUNDIR (else exit 73 unless --resume).")
@click.option("--runs", type=click.IntRange(min=1), default=None, help="Train N networks with seeds seed..seed+N-1; report mean and SD.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Number of epochs (overrides `epochs`).")
@click.option("--seed", type=int, default=None, help="Random seed (overrides `seed`).")
@click.option("--cache-dir", type=str, default=None, help="Preprocessing cache directory (default RUNDIR/../.icechart-cache).")
@click.option("--sync-batchnorm", is_flag=True, default=None, help="Under DDP on CUDA, synchronise batch-norm statistics across ranks (sets `sync_batchnorm`).")
@device_opt
def train(
    config: str,
    data: str | None,
    out: str | None,
    overrides: tuple[str, ...],
    resume: bool,
    overwrite: bool,
    runs: int | None,
    epochs: int | None,
    seed: int | None,
    cache_dir: str | None,
    sync_batchnorm: bool | None,
    device: str,
) -> None:
    """Train a multi-task U-Net (SIC, SOD, FLOE) on labelled AI4Arctic scenes.

    Writes RUNDIR/best.safetensors (the checkpoint `icechart predict --model` takes),
    last.pt (for --resume), metrics.jsonl, split.json and summary.json; with --runs N,
    RUNDIR/run-K/ per seed, summary.json (mean, SD) and ensemble.toml. The scores table goes
    to stdout.

    \b
    Examples:
      icechart synth scenes/ --scenes 16 --size 1200x1200 --seed 1
      icechart train --config quick-cpu --data scenes/ -o runs/quick
      icechart train --config model-1 --data ai4arctic/train -o runs/m1 --runs 20
      icechart train --config run.toml --set epochs=2 --set lr=0.01 -o runs/try --resume
      torchrun --nproc-per-node 4 -m icechart train --config model-1 --data d/ -o runs/ddp --sync-batchnorm
    """
    from icechart.train import load_train_config, train_runs

    if sync_batchnorm:
        overrides = (*overrides, "sync_batchnorm=true")
    cfg = load_train_config(
        config,
        overrides=list(overrides),
        data=data,
        out=out,
        runs=runs,
        epochs=epochs,
        seed=seed,
        cache_dir=cache_dir,
        device=None if device == "auto" else device,
    )
    results, summary = train_runs(cfg, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: one table, from rank 0
        return
    rows = [(f"run {k + 1}", r.scores) for k, r in enumerate(results)]
    if len(results) > 1:
        rows.append(("mean", summary["mean"] or None))
        rows.append(("sd", summary["sd"] or None))
    rows.append(("baseline", summary.get("baseline")))
    click.echo(f"{'':10} {'SIC':>7} {'SOD':>7} {'FLOE':>7} {'combined':>9}")
    for name, sc in rows:
        if sc:
            click.echo(f"{name:10} {sc['SIC']:7.2f} {sc['SOD']:7.2f} {sc['FLOE']:7.2f} {sc['combined']:9.2f}")
    click.echo(f"best checkpoint: {results[0].best_path}" if len(results) == 1 else f"ensemble: {cfg.out}/ensemble.toml")
