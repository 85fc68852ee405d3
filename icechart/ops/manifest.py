"""Per-scene product manifests: ``{id}_{model}.manifest.json``, written last.

A scene's product set is complete only when its manifest exists (contract.md "Products"). The
manifest records the inputs (name, size, mtime, sha256), the model (id, sha256), the software
version, the product options, every product file with its size and sha256, the device and the
timings. A rerun skips a scene whose manifest matches: same input, same model, same product
options (the device does not count). The input is checked by size and modification time first
and hashed only when either changed, so skipping a finished scene reads neither its SAR nor
its bytes.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from icechart._version import __version__
from icechart.atomic import atomic_path
from icechart.errors import TryAgainError
from icechart.hashing import sha256_file

logger = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 1


def manifest_path(outdir: str | Path, scene_id: str, model_id: str) -> Path:
    """``OUT/{id}_{model}.manifest.json``."""
    return Path(outdir) / f"{scene_id}_{model_id}{MANIFEST_SUFFIX}"


Identity = tuple[int, int, int, int]
"""(device, inode, size, mtime_ns) of an open input: a different value means another file."""


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def check_unchanged(path: str | Path, before: Identity) -> None:
    """TryAgainError (75) when ``path`` is no longer the file whose identity was ``before``
    (replaced by a rename, rewritten in place, truncated or removed while it was read)."""
    try:
        now: Identity | None = identity(os.stat(path))
    except OSError:
        now = None
    if now != before:
        raise TryAgainError(
            f"{path}: the input changed while it was being read (replaced, rewritten or removed); "
            "nothing was written, a rerun charts the new file"
        )


def input_record(
    path: str | Path, previous: dict[str, Any] | None = None, *, expect: Identity | None = None
) -> dict[str, Any]:
    """Describe an input file; reuse ``previous["sha256"]`` when size and mtime are unchanged.

    With ``expect`` (the identity taken before the scene was read) the file must still be that
    file before and after hashing (else TryAgainError, 75): the recorded sha256 is then the
    hash of the bytes the products were made from.
    """
    path = Path(path)
    st = path.stat()
    if expect is not None:
        check_unchanged(path, expect)
    rec: dict[str, Any] = {
        "name": path.name,
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }
    if previous and previous.get("size") == st.st_size and previous.get("mtime_ns") == st.st_mtime_ns:
        rec["sha256"] = previous["sha256"]
    else:
        rec["sha256"] = sha256_file(path)
    if expect is not None:  # the bytes hashed are the bytes read: still the same file
        check_unchanged(path, expect)
    return rec


def file_record(path: str | Path) -> dict[str, Any]:
    """Name (relative to OUT), size, mtime and sha256 of a product file."""
    path = Path(path)
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def build_manifest(
    *,
    scene_id: str,
    input_path: str | Path,
    model_id: str,
    model_sha256: str | None,
    options: dict[str, Any],
    files: list[Path],
    device: str,
    timings: dict[str, float],
    previous_input: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    input_identity: Identity | None = None,
) -> dict[str, Any]:
    """The manifest of one finished scene (see the module docstring for the fields).

    ``extra`` adds facts about the scene (e.g. acquisition time, valid SAR fraction, data
    warnings) under ``"scene"``; they are informative and never compared on a rerun.
    """
    data = {
        "manifest_version": MANIFEST_VERSION,
        "scene_id": scene_id,
        "inputs": [input_record(input_path, previous_input, expect=input_identity)],
        "model": {"id": model_id, "sha256": model_sha256},
        "software": {"name": "icechart", "version": __version__},
        "options": _jsonable(options),
        "files": [file_record(p) for p in files],
        "device": device,
        "timings": {k: round(float(v), 3) for k, v in timings.items()},
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if extra:
        data["scene"] = _jsonable(extra)
    return data


def write_manifest(path: str | Path, data: dict[str, Any]) -> Path:
    """Write the manifest atomically (temporary name, then rename)."""
    path = Path(path)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest at ``path``, or None when missing or unreadable (treated as incomplete)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable manifest (%s); the scene counts as incomplete", path, exc)
        return None
    problem = _malformed(data)
    if problem:
        logger.warning("%s: malformed manifest (%s); the scene counts as incomplete", path, problem)
        return None
    return data


_FIELD_TYPES: dict[str, type] = {"model": dict, "options": dict, "inputs": list, "files": list}


def _malformed(data: Any) -> str | None:
    """What is wrong with a manifest's structure (a hand-edited or foreign file), or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for key, tp in _FIELD_TYPES.items():
        if not isinstance(data.get(key), tp):
            return f"`{key}` is not a {'record' if tp is dict else 'list'}"
    if not all(isinstance(r, dict) for r in data["inputs"] + data["files"]):
        return "an input or file entry is not a record"
    if not isinstance(data.get("scene_id"), str):
        return "`scene_id` is not a string"
    return None


def _jsonable(obj: Any) -> Any:
    """Options as plain JSON values (tuples -> lists, paths -> str) so comparisons are stable."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def compare(
    manifest: dict[str, Any],
    *,
    input_path: str | Path,
    model_id: str,
    model_sha256: str | None,
    options: dict[str, Any],
) -> str | None:
    """Why ``manifest`` does not describe this run's product, or None when it matches.

    The device and timings do not count. The input is compared by size and mtime first; only
    when either changed is it hashed (a touched but identical file still matches). The product
    files themselves are checked by :func:`damage`.
    """
    model = manifest.get("model") or {}
    if not isinstance(model, dict):
        return "the manifest's `model` is not a record"
    if model.get("id") != model_id:
        return f"made with model {model.get('id')!r}, not {model_id!r}"
    if model_sha256 and model.get("sha256") and model.get("sha256") != model_sha256:
        return f"made with other weights of model {model_id!r} (sha256 differs)"
    if manifest.get("options") != _jsonable(options):
        old, new = manifest.get("options") or {}, _jsonable(options)
        if not isinstance(old, dict):
            return "the manifest's `options` is not a record"
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return f"made with other product options ({', '.join(keys)})"
    inputs = manifest.get("inputs") or [{}]
    prev = inputs[0] if isinstance(inputs, list) and isinstance(inputs[0], dict) else {}
    path = Path(input_path)
    try:
        st = path.stat()
    except OSError:
        return f"input {path} cannot be read"
    if prev.get("name") != path.name:
        return f"made from input {prev.get('name')!r}, not {path.name!r}"
    if prev.get("size") != st.st_size:
        return "input size changed"
    if prev.get("mtime_ns") != st.st_mtime_ns and sha256_file(path) != prev.get("sha256"):
        return "input content changed"
    return None


def damage(manifest: dict[str, Any], *, verify: bool = False) -> str | None:
    """Why the product files a manifest lists are no longer the ones it recorded, or None.

    Cheap by default: every file must exist as a regular file with its recorded size and
    mtime. With ``verify`` each file is also hashed and compared with its recorded sha256
    (``predict --verify``), which finds a product corrupted in place without a size change.
    """
    outdir = Path(manifest.get("_dir", "."))
    files = manifest.get("files")
    if not isinstance(files, list):
        return "the manifest lists no product files"
    for rec in files:
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
            return "the manifest has a malformed file record"
        f = outdir / rec["name"]
        if Path(rec["name"]).name != rec["name"]:
            return f"the manifest names a file outside OUT ({rec['name']!r})"
        try:
            st = f.lstat()
        except OSError:
            return f"product file {f.name} is missing"
        if not f.is_file() or f.is_symlink():
            return f"product file {f.name} is not a regular file"
        if st.st_size != rec.get("size"):
            return f"product file {f.name} changed size"
        if "mtime_ns" in rec and st.st_mtime_ns != rec["mtime_ns"]:
            if not verify and sha256_file(f) != rec.get("sha256"):
                return f"product file {f.name} changed (sha256 differs)"
        if verify and _sha256_read(f) != rec.get("sha256"):
            return f"product file {f.name} is corrupt (sha256 differs)"
    return None


def _sha256_read(path: Path) -> str:
    """sha256 of the bytes on disk now: never the remembered digest of
    :func:`icechart.hashing.sha256_file`, which a corruption that kept size and mtime fools."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_for_compare(path: Path) -> dict[str, Any] | None:
    """Read a manifest and remember its directory (product names are relative to it)."""
    data = read_manifest(path)
    if data is not None:
        data["_dir"] = str(path.parent)
    return data


def complete_scenes(outdir: str | Path, model_id: str) -> list[dict[str, Any]]:
    """Manifests of every complete scene of ``model_id`` in ``outdir``, sorted by scene id.

    The AutoICE collection file (``autoice_{model}.nc``) is rebuilt from these.
    """
    out = []
    for p in sorted(Path(outdir).glob(f"*_{model_id}{MANIFEST_SUFFIX}")):
        data = load_for_compare(p)
        if data and (data.get("model") or {}).get("id") == model_id:
            out.append(data)
    return sorted(out, key=lambda d: str(d.get("scene_id")))

