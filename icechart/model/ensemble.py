"""Ensembles: N member checkpoints with one input contract, averaged at prediction time.

An ensemble is a TOML manifest, ``ensemble.toml`` (written by ``icechart train --runs N``;
``--model`` takes the file or the directory holding it)::

    # icechart ensemble
    [ensemble]
    id = "sic-ens5"                                  # optional; default ens-<12 hex of sha256>
    members = ["run-1/best.safetensors", "run-2/best.safetensors"]   # relative to this file
    seeds = [0, 1]                                   # informational
    combined_mean = 80.1                             # informational (training scores)

    [calibration]                                    # optional; temperature scaling
    method = "temperature"
    fitted_on = ["20210310T101010_dmi", ...]
    [calibration.temperature]
    SOD = 1.31
    FLOE = 1.12

A member is anything :func:`icechart.model.checkpoint.load_checkpoint` loads (a weights file,
a training run directory, a model directory with ``model.toml``). Members must share the input
contract, checked on loading: ``channels``, ``factor``, ``downscale_method``, ``interp``,
``sar_fill``, ``class_table_version`` and the SIC head (``arch.sic_mode``); a mismatch is a
:class:`~icechart.errors.ModelError` (69) naming the member and the key. Architectures (filters,
decoders) and normalisation statistics may differ: features are read and built once per scene,
unnormalised, then normalised per member (an affine map), and only the forward passes repeat.

Averaging (Lakshminarayanan et al. 2017, "Simple and Scalable Predictive Uncertainty Estimation
using Deep Ensembles"): SOD/FLOE (and a classification SIC head's) class probabilities are
averaged over members, each member at temperature 1; the manifest's temperature is then applied
to the average (:func:`icechart.calibration.apply_temperature`), because it was fitted on that
average. SIC regression outputs are averaged; their sample standard deviation across members
(ddof 1, the ensemble spread) is the product's ``SIC_standard_error``.

Identity: the ensemble's ``sha256`` is the sha256 of its member weights' sha256s (in order, one
per line) followed by the calibration temperatures as JSON, so a product records exactly which
weights and calibration made it; the model id is the manifest's ``id``, the registry id, or
``ens-<first 12 hex>`` (cf. ``ckpt-<12 hex>`` of single checkpoints, contract.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icechart.atomic import atomic_path
from icechart.errors import ModelError
from icechart.model.contract import ModelContract, contract_of

logger = logging.getLogger(__name__)

MANIFEST = "ensemble.toml"
CONTRACT_KEYS = ("channels", "factor", "downscale_method", "interp", "sar_fill", "class_table_version")
"""Metadata keys every member must share (plus ``arch.sic_mode``)."""
_DEFAULTS = {"downscale_method": "mean", "interp": "bilinear", "sar_fill": None}


@dataclass
class EnsembleModel:
    """Loaded members plus the ensemble's metadata.

    Attributes
    ----------
    members
        :class:`~icechart.model.checkpoint.LoadedModel` per member, in manifest order.
    meta
        The shared input contract (the first member's metadata) with ``ensemble`` (member
        names, sha256s, seeds) and ``calibration`` (the manifest's, or absent) replaced.
    model_id, sha256, path
        Id, identity hash (module docstring) and the manifest file.
    """

    members: list[Any]
    meta: dict[str, Any]
    model_id: str
    sha256: str
    path: Path
    names: list[str] = field(default_factory=list)

    @property
    def contract(self) -> ModelContract:
        """The members' shared input/output contract (parsed once, then cached)."""
        return contract_of(self)

    @property
    def net(self) -> Any:
        """The first member's network (for code that only needs a device or an architecture)."""
        return self.members[0].net

    def to(self, device: Any) -> "EnsembleModel":
        """Move every member's network to ``device`` (eval mode)."""
        for m in self.members:
            m.net.to(device).eval()
        return self


def members_of(model: Any) -> list[Any]:
    """The members of an ensemble, or ``[model]`` for a single checkpoint."""
    members = getattr(model, "members", None)
    return list(members) if members else [model]


def is_ensemble(model: Any) -> bool:
    """True for a loaded ensemble (even of one member)."""
    return isinstance(model, EnsembleModel)


def manifest_file(path: str | Path) -> Path | None:
    """The ensemble manifest ``path`` names: a ``.toml`` file with an ``[ensemble]`` table, or a
    directory holding ``ensemble.toml`` and neither ``model.toml`` nor ``best.safetensors``;
    None otherwise."""
    p = Path(path)
    if p.is_dir():
        if (p / "model.toml").is_file() or (p / "best.safetensors").is_file():
            return None
        return p / MANIFEST if (p / MANIFEST).is_file() else None
    if p.is_file() and p.suffix == ".toml":
        try:
            with open(p, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError):
            return None
        return p if isinstance(doc.get("ensemble"), dict) else None
    return None


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The parsed manifest, checked for a non-empty ``members`` list of strings.

    Raises
    ------
    ModelError
        Unreadable TOML, no ``[ensemble]`` table, or no members (69).
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ModelError(f"{p}: cannot read ensemble manifest ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"{p}: not valid TOML ({exc})") from exc
    ens = doc.get("ensemble")
    if not isinstance(ens, dict):
        raise ModelError(f"{p}: no [ensemble] table; expected an icechart ensemble manifest")
    members = ens.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise ModelError(f"{p}: [ensemble] members must be a non-empty list of checkpoint paths")
    cal = doc.get("calibration")
    if cal is not None and not isinstance(cal, dict):
        raise ModelError(f"{p}: [calibration] must be a table")
    return doc


def _contract(meta: Mapping[str, Any]) -> dict[str, Any]:
    c = {k: meta.get(k, _DEFAULTS.get(k)) for k in CONTRACT_KEYS}
    c["channels"] = list(c["channels"] or [])
    c["arch.sic_mode"] = (meta.get("arch") or {}).get("sic_mode", "regression")
    return c


def check_contract(metas: Sequence[Mapping[str, Any]], names: Sequence[str], *, where: str | Path) -> None:
    """ModelError (69) naming the first member whose input contract differs from member 1's."""
    ref = _contract(metas[0])
    for name, meta in zip(names[1:], metas[1:]):
        c = _contract(meta)
        for key, value in ref.items():
            if c[key] != value:
                raise ModelError(
                    f"{where}: member {name} has {key} = {c[key]!r} but member {names[0]} has "
                    f"{value!r}; ensemble members must share the input contract "
                    f"({', '.join(CONTRACT_KEYS)}, SIC head)"
                )


def temperatures(meta: Mapping[str, Any]) -> dict[str, float]:
    """``{chart: T}`` from a model's ``calibration`` metadata (empty when uncalibrated)."""
    cal = meta.get("calibration") or {}
    temp = cal.get("temperature") or {}
    out: dict[str, float] = {}
    for chart, t in temp.items():
        try:
            v = float(t)
        except (TypeError, ValueError):
            raise ModelError(f"calibration temperature of {chart} is not a number: {t!r}") from None
        if not v > 0:
            raise ModelError(f"calibration temperature of {chart} must be positive, got {v}")
        out[str(chart)] = v
    return out


def ensemble_sha256(member_sha256: Sequence[str], calibration: Mapping[str, Any] | None) -> str:
    """The identity hash of an ensemble (module docstring)."""
    h = hashlib.sha256()
    for s in member_sha256:
        h.update(s.encode() + b"\n")
    temp = temperatures({"calibration": calibration or {}})
    h.update(json.dumps(temp, sort_keys=True).encode())
    return h.hexdigest()


def _member_path(mf: Path, name: str) -> Path:
    """A member's checkpoint: an absolute path as given (the operator named it), a relative one
    only inside the manifest's directory (a ``..`` that leaves it is refused, 69)."""
    rel = Path(name)
    if "\0" in name or not name.strip():
        raise ModelError(f"{mf}: member {name!r} is not a file name")
    if rel.is_absolute():
        return rel
    if not (mf.parent / rel).resolve().is_relative_to(mf.parent.resolve()):
        raise ModelError(
            f"{mf}: member {name!r} points outside the ensemble directory; "
            "give an absolute path to use a checkpoint kept elsewhere"
        )
    return mf.parent / rel


def load_ensemble(path: str | Path, *, device: Any = "cpu") -> EnsembleModel:
    """Load every member of an ensemble manifest (or of the directory holding one).

    Parameters
    ----------
    path
        ``ensemble.toml`` or its directory.
    device
        Where to put the networks.

    Raises
    ------
    ModelError
        Unreadable manifest, a member missing or corrupt (named), nested ensembles, or members
        whose input contracts differ (69, naming the member and the key).
    """
    from icechart.model.checkpoint import load_checkpoint

    p = Path(path)
    mf = manifest_file(p) if p.exists() else None
    if mf is None:
        raise ModelError(f"{p}: not an ensemble manifest (expected {MANIFEST} with an [ensemble] table)")
    doc = read_manifest(mf)
    ens = doc["ensemble"]
    names = list(ens["members"])
    members = []
    for name in names:
        mp = _member_path(mf, name)
        if manifest_file(mp) is not None:
            raise ModelError(f"{mf}: member {name} is itself an ensemble; list its members instead")
        if not mp.exists():
            raise ModelError(f"{mf}: member {name} not found ({mp})")
        try:
            members.append(load_checkpoint(mp, device=device))
        except ModelError as exc:
            raise ModelError(f"{mf}: member {name}: {exc.message}") from exc
    check_contract([m.meta for m in members], names, where=mf)
    cal = doc.get("calibration")
    temperatures({"calibration": cal or {}})  # validate early
    sha = ensemble_sha256([m.sha256 for m in members], cal)
    meta = dict(members[0].meta)
    meta.pop("calibration", None)
    if cal:
        meta["calibration"] = dict(cal)
    meta["ensemble"] = {
        "members": names,
        "member_sha256": [m.sha256 for m in members],
        "seeds": list(ens.get("seeds", [])),
        "n": len(members),
    }
    from icechart.model.checkpoint import check_model_id

    model_id = check_model_id(ens.get("id") or f"ens-{sha[:12]}", where=mf)
    logger.info("ensemble %s: %d members from %s", model_id, len(members), mf)
    return EnsembleModel(members=members, meta=meta, model_id=model_id, sha256=sha, path=mf, names=names)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(round(v, 6))
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_table(name: str, table: Mapping[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    subs = []
    for k, v in table.items():
        if v is None:
            continue
        if isinstance(v, Mapping):
            subs.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in subs:
        lines += ["", *_toml_table(f"{name}.{k}", v)]
    return lines


def write_manifest(
    path: str | Path,
    members: Sequence[str],
    *,
    model_id: str | None = None,
    info: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
    comment: str = "icechart ensemble",
) -> Path:
    """Write ``ensemble.toml`` atomically.

    Parameters
    ----------
    path
        The manifest file (or a directory: ``<dir>/ensemble.toml``).
    members
        Member paths, relative to the manifest's directory (or absolute).
    model_id
        Optional ``id``.
    info
        Extra scalar/list keys of the ``[ensemble]`` table (seeds, score means...).
    calibration
        The ``[calibration]`` table (``temperature`` a sub-table ``{chart: T}``).
    """
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    ens: dict[str, Any] = {}
    if model_id:
        ens["id"] = model_id
    ens["members"] = list(members)
    ens.update(dict(info or {}))
    lines = [f"# {comment}", *_toml_table("ensemble", ens)]
    if calibration:
        lines += ["", *_toml_table("calibration", calibration)]
    with atomic_path(p) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return p


def set_calibration(path: str | Path, calibration: Mapping[str, Any]) -> Path:
    """Replace the ``[calibration]`` table of an existing manifest, keeping ``[ensemble]``."""
    mf = manifest_file(path)
    if mf is None:
        raise ModelError(f"{path}: not an ensemble manifest")
    doc = read_manifest(mf)
    ens = dict(doc["ensemble"])
    members = ens.pop("members")
    mid = ens.pop("id", None)
    return write_manifest(mf, members, model_id=mid, info=ens, calibration=calibration)
