"""Shared fixtures: tiny synthetic AI4Arctic scenes built in code (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")



@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own icechart config or ICECHART_* variables never leak into tests."""
    for key in list(os.environ):
        if key.startswith("ICECHART_") and key != "ICECHART_SIGRID_DIR":
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))


@pytest.fixture(scope="session")
def scene_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One labelled synthetic scene of odd size (123 x 117) with NaN borders and land."""
    from icechart.synth import make_scene, write_scene

    d = tmp_path_factory.mktemp("scene")
    ds = make_scene((123, 117), seed=7)
    path = d / f"{ds.attrs['scene_id']}"
    write_scene(ds, path)
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Every SIGRID-3 chart the tests write is checked: a valid coverage whose union is the
    charted area, and consistent egg codes (icechart.products.sigrid3.VERIFY)."""
    from icechart.products import sigrid3

    sigrid3.VERIFY = True
