"""Split one archive run across machines: ``icechart predict --shard K/N``.

**The partition.** Scene ``s`` belongs to shard ``sha256(scene id) mod N`` (the first 8 bytes of
the digest, big-endian). It depends only on the scene id and N, so it is the same on every
machine, whatever the order or the directory listing of the inputs; the N shards together
hold every scene exactly once; and a scene keeps its shard when the archive grows, so a rerun
of a shard meets its own finished scenes and skips them (the per-scene idempotence of
:mod:`icechart.ops.batch`: manifests, atomic files). The scene id is the one the manifests use
(:func:`icechart.ops.batch.scene_id_for`: the ``scene_id`` attribute, else the file name), so
two files of one scene always land in the same shard.

**Where K/N comes from.** ``--shard K/N`` (K in 0..N-1), or ``--shard auto`` from the
scheduler's environment: a Slurm job array (``SLURM_ARRAY_TASK_ID`` relative to
``SLURM_ARRAY_TASK_MIN`` and ``SLURM_ARRAY_TASK_STEP``, of ``SLURM_ARRAY_TASK_COUNT``), or a
Kubernetes Indexed Job (``JOB_COMPLETION_INDEX``, of ``ICECHART_SHARD_COUNT``: Kubernetes
exports no completion count, so the Job sets it to ``spec.completions``; see
``examples/k8s/``).

**The merge, automatic.** Every shard, when its scenes are done (some may have failed), writes
a marker ``OUT/.icechart-shards/{model}/{K}-of-{N}.json`` (its scene ids, counts, exit code).
Then, holding ``OUT/.icechart-shards/{model}/merge.lock``, it looks for all N markers of *this*
partition (same N, same set of scene ids in each share, same product options and model
weights); when they are all there, it is the last shard to finish, and it merges: it rebuilds
``autoice_{model}.nc`` from every complete scene (with ``--formats autoice``) and writes the
run summary ``OUT/shards_{model}.json`` (totals, failed scenes, per-shard exit codes). The lock
serialises the check, so the last shard to take it sees every marker. A shard that crashed
leaves no marker: nothing is merged until it is run again (which skips its finished scenes).
Markers of an earlier run over the same scenes count as done: their scenes are complete (or
failed) already, and a shard that reruns merges again when it ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icechart.errors import ConfigError, OutputError

logger = logging.getLogger(__name__)

SHARD_DIR = ".icechart-shards"
SUMMARY_PREFIX = "shards_"
COUNT_ENV = "ICECHART_SHARD_COUNT"
"""The number of completions of a Kubernetes Indexed Job (Kubernetes does not export it)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``; ``source`` says where it came from."""

    index: int
    count: int
    source: str = "--shard"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise ConfigError(f"--shard auto: {name} is not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"--shard auto: {name}={raw!r} is not an integer") from None


def _checked(index: int, count: int, source: str) -> Shard:
    if count < 1:
        raise ConfigError(f"{source}: the shard count must be at least 1, got {count}")
    if not 0 <= index < count:
        raise ConfigError(f"{source}: shard index {index} is outside 0..{count - 1}")
    return Shard(index, count, source)


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard:
    """The shard of this task from a Slurm job array or a Kubernetes Indexed Job.

    Raises
    ------
    ConfigError
        Neither scheduler's variables are set, or they are not integers / out of range (78).
    """
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_TASK_ID", "").strip():
        task = _int(env, "SLURM_ARRAY_TASK_ID")
        lo = _int(env, "SLURM_ARRAY_TASK_MIN", 0)
        step = max(1, _int(env, "SLURM_ARRAY_TASK_STEP", 1))
        if (task - lo) % step:
            raise ConfigError(f"--shard auto: SLURM_ARRAY_TASK_ID={task} is not on the array's step {step} from {lo}")
        return _checked((task - lo) // step, _int(env, "SLURM_ARRAY_TASK_COUNT"), "SLURM_ARRAY_TASK_ID")
    if env.get("JOB_COMPLETION_INDEX", "").strip():
        return _checked(_int(env, "JOB_COMPLETION_INDEX"), _int(env, COUNT_ENV), "JOB_COMPLETION_INDEX")
    raise ConfigError(
        "--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX "
        f"(a Kubernetes Indexed Job, with {COUNT_ENV}) is set; give --shard K/N"
    )


def parse_shard(spec: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """``K/N`` (K in 0..N-1), ``auto`` (:func:`shard_from_env`) or None/empty (no sharding).

    Raises
    ------
    ConfigError
        A malformed or out-of-range spec (78).
    """
    if spec is None or not str(spec).strip():
        return None
    s = str(spec).strip()
    if s.lower() == "auto":
        return shard_from_env(env)
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", s)
    if not m:
        raise ConfigError(f"--shard {s!r}: expected K/N (shard K of N, K in 0..N-1) or auto")
    return _checked(int(m.group(1)), int(m.group(2)), f"--shard {s}")


def shard_of(scene_id: str, count: int) -> int:
    """The shard (0..count-1) of a scene id: its sha256 modulo ``count``."""
    digest = hashlib.sha256(scene_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass
class Partition:
    """The scenes of one shard, and the ids of every shard's share (to recognise markers)."""

    shard: Shard
    paths: list[Path]
    """This shard's scene files, in input order."""
    shares: list[list[str]]
    """Sorted scene ids per shard index."""

    @property
    def scene_ids(self) -> list[str]:
        return self.shares[self.shard.index]


def partition(inputs: Iterable[str | Path], shard: Shard) -> Partition:
    """Expand ``inputs`` as ``predict`` does and keep this shard's scenes."""
    from icechart.ops.batch import collect_scenes, scene_id_for

    shares: list[set[str]] = [set() for _ in range(shard.count)]
    mine: list[Path] = []
    for path in collect_scenes(inputs):
        sid = scene_id_for(path) or path.name
        k = shard_of(sid, shard.count)
        shares[k].add(sid)
        if k == shard.index:
            mine.append(path)
    logger.info("shard %s (%s): %d of %d scene(s)", shard, shard.source, len(mine), sum(map(len, shares)))
    return Partition(shard, mine, [sorted(s) for s in shares])


def _shard_dir(outdir: Path, model_id: str) -> Path:
    return outdir / SHARD_DIR / model_id


def marker_path(outdir: str | Path, model_id: str, shard: Shard) -> Path:
    return _shard_dir(Path(outdir), model_id) / f"{shard.index}-of-{shard.count}.json"


def _write_json(dest: Path, doc: dict[str, Any]) -> None:
    from icechart.atomic import atomic_path

    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def finish_shard(
    part: Partition,
    *,
    outdir: str | Path,
    model_id: str,
    model_sha256: str | None,
    options: Mapping[str, Any],
    result: Any,
    merge: Callable[[], Any] | None = None,
) -> Path | None:
    """Record this shard as done and, when every shard is, merge (see the module docstring).

    Parameters
    ----------
    part
        This shard's :class:`Partition`.
    result
        The :class:`icechart.ops.batch.BatchResult` of this shard's scenes.
    merge
        Rebuilds the run's collection files (the AutoICE file); called by the last shard only.

    Returns
    -------
    Path or None
        The run summary when this shard merged, else None.

    Raises
    ------
    OutputError
        The marker or the summary cannot be written (73).
    """
    from icechart.ops.lock import run_lock

    out = Path(outdir)
    shard = part.shard
    failed = [r.scene_id or r.path.name for r in result.results if r.status == "failed"]
    doc = {
        "shard": shard.index,
        "count": shard.count,
        "source": shard.source,
        "model_id": model_id,
        "model_sha256": model_sha256,
        "options": dict(options),
        "scenes": part.scene_ids,
        "ok": result.count("ok"),
        "skipped": result.count("skipped"),
        "failed": failed,
        "exit_code": result.exit_code,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    d = _shard_dir(out, model_id)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{d}: cannot create the shard directory ({exc.strerror})") from exc
    _write_json(marker_path(out, model_id, shard), doc)
    with run_lock(d / "merge.lock", wait=600.0):
        markers: list[dict[str, Any]] = []
        for k in range(shard.count):
            p = marker_path(out, model_id, Shard(k, shard.count))
            try:
                m = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                logger.info("shard %s done; waiting for shard %d/%d", shard, k, shard.count)
                return None
            same = (
                m.get("scenes") == part.shares[k]
                and m.get("options") == doc["options"]
                and m.get("model_sha256") == model_sha256
            )
            if not same:
                logger.info("shard %s done; shard %d/%d has not finished this run yet", shard, k, shard.count)
                return None
            markers.append(m)
        logger.info("shard %s is the last of %d: merging", shard, shard.count)
        collection = merge() if merge is not None else None
        summary = {
            "model_id": model_id,
            "model_sha256": model_sha256,
            "shards": shard.count,
            "scenes": sum(len(m["scenes"]) for m in markers),
            "ok": sum(int(m["ok"]) for m in markers),
            "skipped": sum(int(m["skipped"]) for m in markers),
            "failed": sorted(s for m in markers for s in m["failed"]),
            "exit_codes": [int(m["exit_code"]) for m in markers],
            "merged_by": shard.index,
            "collection": Path(collection).name if collection else None,
            "finished": doc["finished"],
        }
        dest = out / f"{SUMMARY_PREFIX}{model_id}.json"
        _write_json(dest, summary)
    logger.info(
        "run summary %s: %d scene(s) in %d shard(s), %d failed", dest, summary["scenes"], shard.count, len(summary["failed"])
    )
    return dest


def select(inputs: Iterable[str | Path], spec: str | None) -> Partition | None:
    """``--shard`` for a command: None without one, else this shard's :class:`Partition`."""
    shard = parse_shard(spec)
    return None if shard is None else partition(inputs, shard)


def finish_run(
    part: Partition | None,
    *,
    outdir: str | Path,
    model: Any,
    options: Mapping[str, Any],
    result: Any,
    merge: Callable[[], Any],
) -> Path | None:
    """The end of a ``predict`` run: ``merge()`` at once without sharding, else
    :func:`finish_shard` (which merges only in the last shard)."""
    if part is None:
        merge()
        return None
    return finish_shard(
        part, outdir=outdir, model_id=model.model_id, model_sha256=getattr(model, "sha256", None),
        options=options, result=result, merge=merge,
    )  # fmt: skip
