"""Operations: unattended, safe runs from cron (locks, manifests, batches, signals).

* :mod:`icechart.ops.lock` -- ``--lock FILE``: an ``flock`` lock that dies with the process;
  per-scene claims (``OUT/.claim-{id}_{model}``) so concurrent runs share one OUT.
* :mod:`icechart.ops.manifest` -- ``{id}_{model}.manifest.json``, written last; rerun skipping,
  product damage checks (size and mtime, sha256 with ``--verify``), the input's identity.
* :mod:`icechart.ops.batch` -- many scenes per call, each ok/skipped/failed independently.
* :mod:`icechart.ops.signals` -- SIGINT/SIGTERM/SIGHUP remove temporary files and exit
  130/143/129.
"""

from typing import TYPE_CHECKING

# Lazy (PEP 562): the command line imports icechart.ops.signals first of all, to install its
# handlers before anything slow; importing this package must therefore cost nothing.
_WHERE = {
    "batch": (
        "BatchError", "BatchResult", "SceneOutput", "SceneResult", "collect_scenes", "prepare_outdir",
        "run_batch", "run_guarded", "want_progress",
    ),
    "lock": ("claim", "run_lock"),
    "manifest": (
        "build_manifest", "complete_scenes", "manifest_path", "read_manifest", "sha256_file", "write_manifest",
    ),
    "signals": ("SignalExit", "handle_signals"),
}  # fmt: skip
_MODULE = {name: mod for mod, names in _WHERE.items() for name in names}

if TYPE_CHECKING:
    from icechart.ops.batch import (
        BatchError,
        BatchResult,
        SceneOutput,
        SceneResult,
        collect_scenes,
        prepare_outdir,
        run_batch,
        run_guarded,
        want_progress,
    )
    from icechart.ops.lock import claim, run_lock
    from icechart.ops.manifest import (
        build_manifest,
        complete_scenes,
        manifest_path,
        read_manifest,
        sha256_file,
        write_manifest,
    )
    from icechart.ops.signals import SignalExit, handle_signals

__all__ = [
    "BatchError",
    "BatchResult",
    "SceneOutput",
    "SceneResult",
    "SignalExit",
    "build_manifest",
    "claim",
    "collect_scenes",
    "complete_scenes",
    "handle_signals",
    "manifest_path",
    "prepare_outdir",
    "read_manifest",
    "run_batch",
    "run_guarded",
    "run_lock",
    "sha256_file",
    "want_progress",
    "write_manifest",
]


def __getattr__(name: str) -> object:
    if name in _MODULE:
        import importlib

        return getattr(importlib.import_module(f"icechart.ops.{_MODULE[name]}"), name)
    raise AttributeError(f"module 'icechart.ops' has no attribute {name!r}")
