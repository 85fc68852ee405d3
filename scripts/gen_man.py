#!/usr/bin/env python3
"""Generate man/ (one page per command) from the Click help with click-man.

Usage: ``python scripts/gen_man.py [OUTDIR]`` (default ``man/``); the Makefile's ``man``
target runs it. The version is icechart's ``__version__`` and the date is pinned
(``MAN_DATE``, or ``SOURCE_DATE_EPOCH`` when set) so the pages are reproducible and
``tests/test_man.py`` can tell when they are stale. Every page gets an EXIT STATUS section
(the contract's table) and the group page ENVIRONMENT and FILES sections.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import click
from click_man.core import generate_man_page

MAN_DATE = "2025-01-01"
"""Pinned page date; bump it with a release (never the clock: the pages must be reproducible)."""


def man_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return time.strftime("%Y-%m-%d", time.gmtime(int(epoch))) if epoch else MAN_DATE


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace("-", "\\-")


def _fix_paragraphs(page: str) -> str:
    r"""Click's ``\b`` (do not rewrap) paragraphs become roff no-fill blocks.

    click-man copies the help text verbatim; a line holding only ``\b`` would otherwise be
    read by roff as an escape. A ``\b`` block runs until the next blank line (``.PP``).
    """
    out: list[str] = []
    nofill = False
    for line in page.split("\n"):
        if line.strip() in ("\b", "\\b"):  # Click's marker: a backspace char (or a literal \b)
            out.append(".nf")
            nofill = True
            continue
        if nofill and (line == ".PP" or line.startswith((".SH", ".TP"))):
            out.append(".fi")
            nofill = False
        if line.startswith((".", "'")) and not line.startswith((".SH", ".TH", ".PP", ".TP", ".B", ".nf", ".fi")):
            line = "\\&" + line  # a help line starting with '.' is text, not a request
        out.append(line)
    if nofill:
        out.append(".fi")
    return "\n".join(out)


def _exit_section() -> str:
    from icechart.cli.main import EXIT_CODES

    lines = ['.SH "EXIT STATUS"', "A batch exits with the code of its first failing scene, in input order."]
    for code, meaning in EXIT_CODES.items():
        lines += [".TP", f"\\fB{code}\\fP", _esc(meaning)]
    return "\n".join(lines)


def _group_sections() -> str:
    return "\n".join(
        [
            ".SH ENVIRONMENT",
            ".TP",
            "\\fBICECHART_CONFIG\\fP",
            "Configuration file (TOML, tables [predict], [score], [train]) when \\-\\-config is not given.",
            ".TP",
            "\\fBICECHART_\\fP\\fICOMMAND\\fP\\fB_\\fP\\fIOPTION\\fP",
            _esc("An option's value, e.g. ICECHART_PREDICT_DEVICE=cpu. Precedence: flag > "
                 "environment > file > default; see icechart-config-show(1)."),
            ".SH FILES",
            ".TP",
            "\\fB~/.config/icechart/icechart.toml\\fP",
            _esc("The per-user configuration file (platformdirs; `icechart config path` prints "
                 "it), used when neither --defaults nor ICECHART_CONFIG is given."),
        ]
    )


def render(cli: click.Command, name: str = "icechart", *, version: str, date: str) -> dict[str, str]:
    """Every page as {file name: roff text}, recursively over subcommands (hidden ones skipped)."""
    pages: dict[str, str] = {}

    def walk(cmd: click.Command, info_name: str, parent: click.Context | None) -> None:
        ctx = click.Context(cmd, info_name=info_name, parent=parent)
        with warnings.catch_warnings():  # click-man calls a helper Click 8.2+ deprecates
            warnings.simplefilter("ignore", DeprecationWarning)
            page = generate_man_page(ctx, version=version, date=date)
        page = _fix_paragraphs(page).rstrip("\n")
        if parent is None:
            page += "\n" + _group_sections()
        page += "\n" + _exit_section() + "\n"
        pages[ctx.command_path.replace(" ", "-") + ".1"] = page
        for sub_name, sub in sorted(getattr(cmd, "commands", {}).items()):
            if not sub.hidden:
                walk(sub, sub_name, ctx)

    walk(cli, name, None)
    return pages


def write(outdir: str | Path) -> list[Path]:
    """Regenerate ``outdir`` (stale ``icechart*.1`` pages removed)."""
    from icechart import __version__
    from icechart.cli.main import cli

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    pages = render(cli, version=__version__, date=man_date())
    for old in outdir.glob("icechart*.1"):
        if old.name not in pages:
            old.unlink()
    written = []
    for fname, text in pages.items():
        p = outdir / fname
        p.write_text(text, encoding="utf-8")
        written.append(p)
    return written


if __name__ == "__main__":
    for p in write(sys.argv[1] if len(sys.argv) > 1 else "man"):
        print(p)
