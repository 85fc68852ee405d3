"""``icechart cache list|prune``: the training preprocessing cache (one library call each)."""

from __future__ import annotations

import json
import logging
import re

import click

from icechart.cli.options import json_opt

logger = logging.getLogger(__name__)

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class Size(click.ParamType):
    """A byte count: ``500M``, ``20G``, ``1.5T`` or plain bytes."""

    name = "SIZE"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(value).lower())
        if not m:
            self.fail(f"{value!r} is not a size (e.g. 500M, 20G)", param, ctx)
        return int(float(m.group(1)) * _UNITS[m.group(2)])


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TiB"


@click.group(name="cache")
def cache() -> None:
    """Inspect and prune the training preprocessing cache (`icechart train --cache-dir`).

    An entry holds one scene's downscaled features and labels, keyed by the scene file (path,
    size, modification time), the feature settings and the version of the feature code; an
    entry that no run can use again (other feature code, source scene changed or gone, old
    layout) is stale.

    \b
    Examples:
      icechart cache list runs/.icechart-cache
      icechart cache prune runs/.icechart-cache --older-than 30 --max-size 200G
    """


@cache.command(name="list")
@click.argument("cache_dir", metavar="CACHE_DIR")
@json_opt("the entries (one document)")
def list_cmd(cache_dir: str, as_json: bool) -> None:
    """List the entries of CACHE_DIR, least recently used first, with size and staleness.

    \b
    Examples:
      icechart cache list runs/.icechart-cache
      icechart cache list runs/.icechart-cache --json | jq '.entries[] | select(.stale)'
    """
    from icechart.training.cache import list_entries

    entries = list_entries(cache_dir)
    total = sum(e.bytes for e in entries)
    if as_json:
        click.echo(json.dumps({"entries": [e.to_dict() for e in entries], "bytes": total}, indent=1))
        return
    click.echo(f"{'key':24}  {'scene':28} {'size':>10}  {'last used':20}  state")
    for e in entries:
        d = e.to_dict()
        click.echo(f"{e.key:24}  {str(e.scene_id or '?'):28} {_human(e.bytes):>10}  {d['last_used']:20}  {e.stale or 'ok'}")
    n_stale = sum(1 for e in entries if e.stale)
    click.echo(f"{len(entries)} entries, {_human(total)}; {n_stale} stale")


@cache.command(name="prune")
@click.argument("cache_dir", metavar="CACHE_DIR")
@click.option("--older-than", type=click.FloatRange(min=0), default=None, metavar="DAYS", help="Also remove entries unused for more than DAYS days.")
@click.option("--max-size", type=Size(), default=None, help="Also remove the least recently used entries until the cache fits in SIZE (e.g. 200G).")
@click.option("--all", "everything", is_flag=True, help="Remove every entry.")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
def prune(cache_dir: str, older_than: float | None, max_size: int | None, everything: bool, dry_run: bool) -> None:
    """Remove the stale entries of CACHE_DIR, and optionally old ones or down to a size.

    Prints one line per removed entry and a total on stdout. Do not prune a cache that a
    running `icechart train` is building.

    \b
    Examples:
      icechart cache prune runs/.icechart-cache
      icechart cache prune runs/.icechart-cache --older-than 30 --dry-run
    """
    from icechart.training.cache import prune as prune_cache

    gone = prune_cache(cache_dir, older_than_days=older_than, max_bytes=max_size, everything=everything, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for e in gone:
        click.echo(f"{verb} {e.key} ({e.scene_id or '?'}, {_human(e.bytes)}{', ' + e.stale if e.stale else ''})")
    click.echo(f"{verb} {len(gone)} entries, {_human(sum(e.bytes for e in gone))}")
