"""Batch runs: many scenes per call, each processed, skipped or failed on its own.

:func:`run_batch` calls a per-scene function (``process(path) -> product files`` or a
:class:`SceneOutput`) for each input in order, skips scenes whose manifest matches this run,
refuses to replace a different product without ``overwrite`` (73), makes a scene again whose
products are missing or damaged, writes each scene's manifest last, removes the files of a
failed attempt (putting a replaced set back), skips scenes another live run has claimed, and
logs one summary line per scene on stderr (scene id, status, seconds, device, peak memory,
input file). A failure in one scene never stops the others; the batch's exit code is the code
of the first failing scene in input order (contract.md "Exit codes").
"""

from __future__ import annotations

import logging
import os
import resource
import stat
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from icechart import atomic as A
from icechart.errors import (
    BadDataError,
    DataWarning,
    IcechartError,
    InputMissingError,
    InternalError,
    ModelError,
    OutputError,
    TryAgainError,
    is_out_of_memory,
)
from icechart.io.contract import safe_model_id, safe_scene_id, scene_id_from
from icechart.ops import manifest as M
from icechart.ops import signals
from icechart.ops.lock import claim
from icechart.paths import unique_paths

logger = logging.getLogger(__name__)

Status = Literal["ok", "skipped", "failed"]


@dataclass
class SceneOutput:
    """What a per-scene function may return instead of a bare list of files."""

    files: list[Path]
    """The product files it wrote, all inside OUT."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage; recorded in the manifest beside the runner's own ``process_s``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Facts about the scene for the manifest's ``scene`` record (not compared on reruns)."""
    input_digest: dict[str, Any] | None = None
    """``{"size", "mtime_ns", "sha256"}`` of the input when the function hashed it already: the
    manifest reuses the digest while size and mtime still match (no second hash)."""


SceneFn = Callable[[Path], Sequence[Path] | SceneOutput]
"""Process one scene file; return the product files it wrote (all inside OUT) or a
:class:`SceneOutput`."""


@dataclass
class SceneResult:
    """What happened to one input."""

    path: Path
    scene_id: str | None
    status: Status
    seconds: float = 0.0
    device: str = ""
    peak_rss_mib: float = 0.0
    peak_gpu_mib: float | None = None
    exit_code: int = 0
    message: str = ""
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The one-line stderr summary."""
        parts = [
            self.scene_id or "?",
            self.status if self.status != "failed" else f"failed({self.exit_code})",
            f"{self.seconds:.2f}s",
            f"device={self.device or '-'}",
            f"peak_rss={self.peak_rss_mib:.0f}MiB",
        ]
        if self.peak_gpu_mib is not None:
            parts.append(f"peak_gpu={self.peak_gpu_mib:.0f}MiB")
        parts.append(f"input={self.path}")
        line = " ".join(parts)
        if not self.message or self.status == "ok":
            return line
        # error messages start with the file they are about: it is already on the line
        return f"{line}: {self.message.removeprefix(f'{self.path}: ')}"

    def fields(self) -> dict[str, Any]:
        """The same summary as structured fields (for ``--log-format json``)."""
        return {
            "scene_id": self.scene_id,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "peak_gpu_mib": None if self.peak_gpu_mib is None else round(self.peak_gpu_mib, 1),
            "input": str(self.path),
            "exit_code": self.exit_code,
            "detail": self.message,
            "files": [p.name for p in self.files],
        }


@dataclass
class BatchResult:
    """Every scene's result, in input order."""

    results: list[SceneResult]

    @property
    def exit_code(self) -> int:
        """0 when every scene succeeded or was skipped, else the first failing scene's code."""
        for r in self.results:
            if r.status == "failed":
                return r.exit_code
        return 0

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def first_failure(self) -> SceneResult | None:
        return next((r for r in self.results if r.status == "failed"), None)


class BatchError(IcechartError):
    """A batch in which some scene failed; carries the first failing scene's exit code."""

    def __init__(self, result: BatchResult) -> None:
        first = result.first_failure
        assert first is not None
        n, total = result.count("failed"), len(result.results)
        what = first.message if first.message.startswith(str(first.path)) else f"{first.path}: {first.message}"
        super().__init__(
            what if total == 1 else f"{n} of {total} scene(s) failed; first: {what}",
            exit_code=first.exit_code,
        )
        self.result = result


# -- inputs -------------------------------------------------------------------------------------
def _is_scene_file(p: Path) -> bool:
    name = p.name
    # Not only regular files: a FIFO or a device named *.nc is listed so that it fails as its
    # own scene (66) instead of being skipped silently or hanging a reader.
    if name.startswith(".") or not name.endswith(".nc") or p.is_dir():
        return False
    if name.endswith(("_reference.nc", "_autoice.nc")) or name.startswith("autoice_"):
        return False
    # A product netCDF of ours sits beside its manifest: not an input scene.
    return not (p.parent / (p.name[:-3] + M.MANIFEST_SUFFIX)).exists()


def collect_scenes(paths: Iterable[str | Path]) -> list[Path]:
    """Expand inputs: files as given, directories to their ``*.nc`` scene files, sorted.

    Directory listings skip hidden and temporary files, ``*_reference.nc`` label files,
    ``autoice_*.nc`` collections, ``*_autoice.nc`` parts and product files that have a manifest beside them. Paths
    that do not exist, and names that are not regular files (FIFOs, devices), are kept: they
    fail as their own scene with 66. Duplicates (same resolved path) are dropped, keeping the
    first.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if _is_scene_file(q))
            if not found:
                logger.warning("%s: no *.nc scene files in this directory", p)
            out.extend(found)
        else:
            out.append(p)
    return unique_paths(out)


def prepare_outdir(outdir: str | Path) -> Path:
    """Create OUT (and parents) if needed; 73 when that is impossible or it is not writable."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{outdir}: exists and is not a directory") from None
    except OSError as exc:
        raise OutputError(f"{outdir}: cannot create output directory ({exc.strerror})") from exc
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise OutputError(f"{outdir}: output directory is not writable")
    return outdir


def scene_id_for(path: Path) -> str | None:
    """The scene id without reading any data: the ``scene_id`` attribute from the netCDF header,
    else the file name (contract.md "Scene identity"). None when neither has one."""
    attr = None
    try:
        import netCDF4

        with netCDF4.Dataset(path, "r") as ds:
            if "scene_id" in ds.ncattrs():
                attr = str(ds.getncattr("scene_id"))
    except Exception:  # unreadable header: the per-scene function reports the real problem
        attr = None
    return scene_id_from(attr, path)


# -- memory -------------------------------------------------------------------------------------
def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS; process-wide peak so far.
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def _cuda(device: str) -> Any | None:
    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda"):
        return None
    try:
        return torch.cuda if torch.cuda.is_available() else None
    except Exception:
        return None


# -- the runner ---------------------------------------------------------------------------------
def _prefix_files(outdir: Path, scene_id: str, model_id: str) -> set[str]:
    stem = f"{scene_id}_{model_id}"
    return {
        p.name
        for p in outdir.glob(stem + "*")
        if p.name[len(stem) : len(stem) + 1] in (".", "_") and not p.name.startswith(".")
    }


def _classify(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, IcechartError):
        return exc.exit_code, exc.message.splitlines()[0] if exc.message else type(exc).__name__
    if is_out_of_memory(exc):
        return TryAgainError.exit_code, f"out of memory ({type(exc).__name__}); retry later or on another host"
    first = (str(exc).splitlines() or [""])[0]
    return InternalError.exit_code, f"internal error: {type(exc).__name__}: {first}"


def run_batch(
    inputs: Sequence[str | Path],
    process: SceneFn,
    *,
    outdir: str | Path,
    model_id: str,
    model_sha256: str | None,
    options: dict[str, Any],
    device: str,
    overwrite: bool = False,
    strict: bool = False,
    progress: bool = False,
    verify: bool = False,
) -> BatchResult:
    """Run ``process`` on every scene in ``inputs``; see the module docstring.

    Parameters
    ----------
    inputs
        Scene files and directories (expanded with :func:`collect_scenes`).
    process
        Processes one scene and returns the product files it wrote in ``outdir``. It raises
        :class:`~icechart.errors.IcechartError` subclasses for known failures and may emit
        :class:`~icechart.errors.DataWarning` for suspicious data.
    outdir
        OUT; created if needed (73 when impossible). Nothing is written outside it: every
        atomic write is confined to it (:func:`icechart.atomic.confined`).
    model_id, model_sha256
        The model's id (used in file names; refused with 69 unless it is a safe name,
        :data:`icechart.io.contract.MODEL_ID_RE`) and its weights' sha256 (recorded and
        compared).
    options
        The product options that make a product different (formats, crs, resolution, ...);
        not the device.
    device
        The resolved device, for the summary lines and the manifest.
    overwrite
        Replace a finished product that differs from this run's; otherwise such a scene fails
        with 73 naming the existing manifest. A failed replacement puts the old set back.
    strict
        A :class:`~icechart.errors.DataWarning` fails its scene (65) instead of being logged.
    progress
        Write a "scene k/n" line on stderr before each scene.
    verify
        Hash every product file of a finished scene against its manifest (``--verify``);
        without it they are checked by size and mtime. A damaged or missing product makes the
        scene be made again (no ``--overwrite`` needed: the set is this model's own).

    Returns
    -------
    BatchResult
        Per-scene results; ``exit_code`` is the batch's exit code.

    Raises
    ------
    OutputError
        OUT cannot be created (73): nothing is processed.
    ModelError
        The model id is not a safe file-name component (69): nothing is processed.
    """
    if not safe_model_id(model_id):
        raise ModelError(f"model id {model_id!r} is not a safe file name; refusing to write products")
    out = prepare_outdir(outdir)
    A.remove_stale_temporaries(out)
    scenes = collect_scenes(inputs)
    results: list[SceneResult] = []
    seen_ids: dict[str, Path] = {}
    with A.confined(out):
        for k, path in enumerate(scenes, 1):
            signals.check()
            if progress:
                sys.stderr.write(f"icechart: scene {k}/{len(scenes)}: {path}\n")
                sys.stderr.flush()
            r = _run_one(
                path,
                process,
                out=out,
                model_id=model_id,
                model_sha256=model_sha256,
                options=options,
                device=device,
                overwrite=overwrite,
                strict=strict,
                seen_ids=seen_ids,
                verify=verify,
            )
            results.append(r)
            level = logging.ERROR if r.status == "failed" else logging.INFO
            logger.log(level, "%s", r.summary(), extra={"fields": r.fields()})
    result = BatchResult(results)
    logger.info(
        "%d scene(s): %d ok, %d skipped, %d failed; exit %d",
        len(results),
        result.count("ok"),
        result.count("skipped"),
        result.count("failed"),
        result.exit_code,
        extra={"fields": {"scenes": len(results), "ok": result.count("ok"),
                          "skipped": result.count("skipped"), "failed": result.count("failed"),
                          "exit_code": result.exit_code}},
    )
    return result


def _input_identity(path: Path) -> M.Identity:
    """The identity of a scene file before it is read; 66 when it is missing, not a regular
    file (a FIFO or a device would hang the reader) or unreadable (a symlink loop)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputMissingError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise InputMissingError(f"{path}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise InputMissingError(f"{path}: not a regular file (a FIFO, socket or device); expected a scene file")
    return M.identity(st)


class _Backup:
    """Hard links to the files of a finished product set that is about to be replaced, so a
    failed replacement can put the whole old set back (manifest last) instead of leaving old
    and new files mixed. Where links are impossible the old set is removed on failure."""

    def __init__(self, out: Path, names: set[str], manifest: Path) -> None:
        self.out, self.manifest = out, manifest
        self.links: dict[str, Path] = {}
        self.complete = True
        for name in sorted(names | ({manifest.name} if manifest.exists() else set())):
            link = out / f"{A.temp_prefix('bak')}{name}"
            try:
                os.link(out / name, link)
                self.links[name] = link
            except OSError as exc:
                logger.debug("%s: cannot keep a backup (%s)", out / name, exc)
                self.complete = False

    def restore(self, names_now: set[str]) -> None:
        if not self.complete:
            for name in names_now | set(self.links):
                (self.out / name).unlink(missing_ok=True)
            self.drop()
            logger.warning("%s: the replaced product set was removed (no backup possible)", self.manifest.name)
            return
        for name, link in sorted(self.links.items(), key=lambda kv: kv[0] == self.manifest.name):
            os.replace(link, self.out / name)
        self.links.clear()
        logger.info("%s: the previous product set was put back", self.manifest.name)

    def drop(self) -> None:
        for link in self.links.values():
            link.unlink(missing_ok=True)
        self.links.clear()


def _run_one(
    path: Path,
    process: SceneFn,
    *,
    out: Path,
    model_id: str,
    model_sha256: str | None,
    options: dict[str, Any],
    device: str,
    overwrite: bool,
    strict: bool,
    seen_ids: dict[str, Path],
    verify: bool = False,
) -> SceneResult:
    res = SceneResult(path=path, scene_id=None, status="failed", device=device)
    t0 = time.perf_counter()
    try:
        ident = _input_identity(path)
        scene_id = scene_id_for(path)
        if scene_id is not None and not safe_scene_id(scene_id):  # the pattern guarantees it
            raise BadDataError(f"{path}: scene id {scene_id!r} is not a safe file name")
    except Exception as exc:
        res.exit_code, res.message = _classify(exc)
        res.seconds = time.perf_counter() - t0
        res.peak_rss_mib = _peak_rss_mib()
        return res
    res.scene_id = scene_id

    def attempt() -> SceneResult:
        return _attempt(path, process, res, ident, out=out, model_id=model_id, model_sha256=model_sha256,
                        options=options, overwrite=overwrite, strict=strict, seen_ids=seen_ids, verify=verify)

    if scene_id is None:
        return attempt()
    with claim(out, f"{scene_id}_{model_id}") as mine:
        if not mine:
            res.status = "skipped"
            res.message = "being made by another run on this OUT"
            res.seconds = time.perf_counter() - t0
            res.peak_rss_mib = _peak_rss_mib()
            seen_ids.setdefault(scene_id, path)
            return res
        return attempt()


def _attempt(
    path: Path,
    process: SceneFn,
    res: SceneResult,
    ident: M.Identity,
    *,
    out: Path,
    model_id: str,
    model_sha256: str | None,
    options: dict[str, Any],
    overwrite: bool,
    strict: bool,
    seen_ids: dict[str, Path],
    verify: bool,
) -> SceneResult:
    t0 = time.perf_counter()
    device = res.device
    cuda = _cuda(device)
    if cuda is not None:
        try:
            cuda.reset_peak_memory_stats()
        except Exception:
            cuda = None
    scene_id = res.scene_id
    created: set[str] = set()
    before: set[str] = set()
    backup: _Backup | None = None
    started = False
    try:
        if scene_id is not None:
            if scene_id in seen_ids:
                raise BadDataError(f"{path}: same scene id {scene_id} as {seen_ids[scene_id]}")
            seen_ids[scene_id] = path
            mpath = M.manifest_path(out, scene_id, model_id)
            old = M.load_for_compare(mpath)
            before = _prefix_files(out, scene_id, model_id)
            if old is not None:
                reason = M.compare(
                    old, input_path=path, model_id=model_id, model_sha256=model_sha256, options=options
                )
                damaged = M.damage(old, verify=verify) if reason is None else None
                if reason is None and damaged is None:
                    res.status = "skipped"
                    res.message = f"up to date ({mpath.name})"
                    res.files = [out / f["name"] for f in old.get("files", [])]
                    return res
                if damaged is not None:
                    logger.warning("%s: %s; making the scene again", mpath.name, damaged)
                elif not overwrite:
                    raise OutputError(
                        f"{mpath}: a different product exists ({reason}); pass --overwrite to replace it"
                    )
                else:
                    logger.info("%s: replacing (%s)", mpath.name, reason)
                backup = _Backup(out, before - {mpath.name}, mpath)
                # Remove the manifest first: from now on the old set counts as incomplete.
                mpath.unlink(missing_ok=True)
                before.discard(mpath.name)
            elif before:
                logger.info(
                    "%s: completing an unfinished product set (%d file(s) without a manifest)",
                    scene_id,
                    len(before),
                )
        started = True
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            output = process(path)
        if not isinstance(output, SceneOutput):
            output = SceneOutput(files=[Path(f) for f in output])
        files = [Path(f) for f in output.files]
        res.files = files
        if scene_id is None:
            raise BadDataError(
                f"{path}: no scene id (expected YYYYMMDDTHHMMSS_service in the `scene_id` "
                "attribute or the file name)"
            )
        created = _prefix_files(out, scene_id, model_id) - before
        # The products were made from the file opened at the start: it must still be that file.
        M.check_unchanged(path, ident)
        for w in caught:
            if issubclass(w.category, DataWarning):
                res.warnings.append(str(w.message))
                logger.warning("%s: %s", scene_id, w.message)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if strict and res.warnings:
            raise BadDataError(f"{path}: {res.warnings[0]} (--strict)")
        for f in files:
            if f.resolve().parent != out.resolve() or not f.is_file():
                raise InternalError(f"{f}: reported product is not a file in {out}")
        res.seconds = time.perf_counter() - t0
        extra = dict(output.extra)
        if res.warnings:
            extra["warnings"] = list(res.warnings)
        data = M.build_manifest(
            scene_id=scene_id,
            input_path=path,
            model_id=model_id,
            model_sha256=model_sha256,
            options=options,
            files=files,
            device=device,
            timings={**output.timings, "process_s": res.seconds},
            previous_input=output.input_digest,
            extra=extra,
            input_identity=ident,
        )
        M.write_manifest(M.manifest_path(out, scene_id, model_id), data)
        res.status = "ok"
        if backup is not None:
            backup.drop()
        # With --overwrite, drop files of the old set that this run did not produce again.
        keep = {f.name for f in files} | {M.manifest_path(out, scene_id, model_id).name}
        for name in before - keep:
            try:
                (out / name).unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("%s: cannot remove a file of the replaced product (%s)", out / name, exc)
    except Exception as exc:
        res.status = "failed"
        res.exit_code, res.message = _classify(exc)
        logger.debug("%s failed:\n%s", path, "".join(traceback.format_exception(exc)))
        if started:
            _remove_attempt(out, res.scene_id, model_id, before, created, backup)
    except BaseException:
        # SIGINT/SIGTERM/SIGHUP (SignalExit, KeyboardInterrupt): the temporaries are gone
        # already; files this attempt renamed into place are an incomplete set too.
        if started and res.status != "ok":
            _remove_attempt(out, res.scene_id, model_id, before, created, backup)
        raise
    finally:
        res.seconds = time.perf_counter() - t0
        res.peak_rss_mib = _peak_rss_mib()
        if cuda is not None:
            try:
                res.peak_gpu_mib = cuda.max_memory_allocated() / 2**20
            except Exception:
                pass
    return res


def _remove_attempt(
    out: Path,
    scene_id: str | None,
    model_id: str,
    before: set[str],
    created: set[str],
    backup: _Backup | None = None,
) -> None:
    """Remove the files a failed or interrupted attempt created (never the manifest, never a
    file that was there before the attempt): without them OUT holds no partial product. When
    the attempt replaced a finished set, that set is put back from its backup."""
    if scene_id is None:
        return
    if M.manifest_path(out, scene_id, model_id).exists():
        return  # this attempt's manifest made it: the set is complete, keep it
    for name in (_prefix_files(out, scene_id, model_id) - before) | created:
        if not name.endswith(M.MANIFEST_SUFFIX):
            try:
                (out / name).unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("%s: cannot remove a file of the failed attempt (%s)", out / name, exc)
    if backup is not None:
        try:
            backup.restore(_prefix_files(out, scene_id, model_id))
        except OSError as exc:
            logger.warning("%s: cannot put the previous product set back (%s)", out, exc)


def want_progress(flag: bool | None) -> bool:
    """Progress output only when asked (``--progress``) or when stderr is a terminal."""
    if flag is not None:
        return flag
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def run_guarded(
    inputs: Sequence[str | Path],
    process: SceneFn,
    *,
    lock: str | Path | None = None,
    lock_wait: float = 0.0,
    setup: Callable[[], dict[str, Any]] | None = None,
    finish: Callable[[BatchResult], None] | None = None,
    **kwargs: Any,
) -> BatchResult:
    """:func:`run_batch` for a command: signals handled, ``--lock`` held, failures raised.

    In order: SIGINT/SIGTERM handling is installed (temporary files removed, exit 130/143:
    :func:`icechart.ops.signals.handle_signals`); the lock is taken when ``lock`` is given
    (:func:`icechart.ops.lock.run_lock`; busy: 75 at once, or after ``lock_wait`` seconds);
    OUT is created (73 when impossible); ``setup()`` runs and its returned keywords join
    ``kwargs`` (load the model there, so it touches the GPU only while the lock is held and
    only when OUT is usable); the batch runs; ``finish(result)`` runs, still under the lock
    (e.g. rebuilding a collection file from every complete scene), even when some scene failed.

    Parameters
    ----------
    inputs, process
        As for :func:`run_batch`.
    lock, lock_wait
        ``--lock FILE`` and ``--lock-wait SECONDS``.
    setup
        Returns more keyword arguments for :func:`run_batch` (``model_id``, ``device``, ...).
    finish
        Called with the batch's result. When scenes failed too, an error it raises is logged
        and the batch's own exit code is kept.
    kwargs
        For :func:`run_batch` (``outdir`` is required).

    Raises
    ------
    BatchError
        Some scene failed; its ``exit_code`` is the first failing scene's.
    TryAgainError
        The lock is busy (75).
    OutputError
        OUT or the lock file cannot be created (73).
    IcechartError
        Whatever ``setup`` or ``finish`` raise (e.g. ModelError 69).
    """
    from icechart.ops.lock import run_lock
    from icechart.ops.signals import handle_signals

    with handle_signals():
        with run_lock(lock, wait=lock_wait) if lock else nullcontext():
            prepare_outdir(kwargs["outdir"])
            if setup is not None:
                kwargs.update(setup())
            result = run_batch(inputs, process, **kwargs)
            if finish is not None:
                try:
                    finish(result)
                except IcechartError as exc:
                    if not result.exit_code:
                        raise
                    logger.error("%s", exc.message)
    if result.exit_code:
        raise BatchError(result)
    return result
