"""man/ matches the current Click help and renders (click-man, pinned date and version)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from icechart import __version__
from icechart.cli.main import EXIT_CODES, cli

ROOT = Path(__file__).resolve().parents[1]
MAN = ROOT / "man"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_man", ROOT / "scripts" / "gen_man.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    gen = _gen()
    return gen.render(cli, version=__version__, date=gen.MAN_DATE)


def test_man_pages_are_current(pages, tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    _gen().write(tmp_path)  # the same path the Makefile's `man` target takes
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.1")}
    assert fresh == pages
    current = {p.name: p.read_text() for p in MAN.glob("icechart*.1")}
    stale = sorted(n for n in set(fresh) | set(current) if fresh.get(n) != current.get(n))
    assert not stale, f"man/ is stale ({', '.join(stale)}): run `make man` (python scripts/gen_man.py man)"


def test_one_page_per_command_with_exit_codes(pages):
    expected = {"icechart.1"} | {f"icechart-{n}.1" for n, c in cli.commands.items() if not c.hidden}
    assert expected <= set(pages)
    for name, text in pages.items():
        assert text.startswith(f'.TH "{name[:-2].replace("-", " ").upper()}" "1" "{_gen().MAN_DATE}" "{__version__}"')
        assert '.SH "EXIT STATUS"' in text
        assert all(f"\\fB{code}\\fP" in text for code in EXIT_CODES)
        assert "\x08" not in text  # Click's no-rewrap marker became .nf/.fi


def _render(page: Path) -> str:
    if shutil.which("groff"):
        cmd = ["groff", "-man", "-Tutf8", "-ww", str(page)]
    elif shutil.which("man"):
        cmd = ["man", "-l", str(page)]
    else:
        pytest.skip("neither groff nor man is installed")
    r = subprocess.run(cmd, capture_output=True, text=True, env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    return r.stdout


@pytest.mark.parametrize("name", ["icechart", "icechart-predict", "icechart-config-show"])
def test_page_renders(name):
    if name != "icechart" and name.split("-")[1] not in cli.commands:
        pytest.skip(f"command {name} is not registered in this build")
    page = MAN / f"{name}.1"
    assert page.exists(), f"{page} missing: run `make man`"
    text = _render(page)
    plain = "".join(c for i, c in enumerate(text) if c != "\b" and (i + 1 >= len(text) or text[i + 1] != "\b"))
    assert "EXIT STATUS" in plain and "75" in plain and name.replace("-", " ") in plain
