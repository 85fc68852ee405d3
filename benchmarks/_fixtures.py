"""Inputs shared by the operational checks (fault_tmpfs, signals_random, concurrent_predict):
synthetic scenes and a random-weights checkpoint, made once per work directory by the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def scenes_and_model(work: Path, *, n: int, size: str, seed: int, env: dict[str, str]) -> tuple[Path, Path]:
    """``work/scenes`` (``n`` scenes of ``size``) and ``work/m.safetensors``, made when missing."""
    py = sys.executable
    scenes = work / "scenes"
    if not scenes.exists():
        subprocess.run([py, "-m", "icechart", "-q", "synth", str(scenes), "--scenes", str(n), "--size", size,
                        "--seed", str(seed)], check=True, env=env)  # fmt: skip
    model = work / "m.safetensors"
    if not model.exists():
        code = f"from icechart.testing import random_checkpoint; random_checkpoint({str(model)!r})"
        subprocess.run([py, "-c", code], check=True, env=env)
    return scenes, model
