"""icechart: operational sea-ice charts from AI4Arctic Sentinel-1 scenes (MMSeaIce U-Net).

Library API (a notebook user needs no CLI)::

    import icechart
    scene = icechart.open_scene("20180707T113313_cis_prep.nc")
    charts = icechart.predict("20180707T113313_cis_prep.nc")  # xarray.Dataset at SAR geometry
    icechart.predict_batch(["incoming/"], "charts/", lock="/run/lock/icechart.lock")  # the cron batch
"""

from typing import TYPE_CHECKING

from icechart._version import __version__

if TYPE_CHECKING:
    from icechart.io.scene import Scene, open_scene

__all__ = [
    "__version__",
    "Scene",
    "open_scene",
    "predict",
    "predict_batch",
    "predict_scene",
    "process_scene",
    "load_model",
    "write_products",
    "score_paths",
]

# Loaded on first use (PEP 562) so `import icechart` and the CLI's --help import neither torch nor
# xarray: the command installs its signal handlers before any heavy import (icechart.cli.main).
_LAZY = {
    "Scene": ("icechart.io.scene", "Scene"),
    "open_scene": ("icechart.io.scene", "open_scene"),
    "predict": ("icechart.pipeline.predict", "predict"),
    "predict_batch": ("icechart.pipeline.predict", "predict_batch"),
    "process_scene": ("icechart.pipeline.predict", "process_scene"),
    "predict_scene": ("icechart.infer.predict", "predict_scene"),
    "load_model": ("icechart.model.load", "load_model"),
    "write_products": ("icechart.products", "write_products"),
    "score_paths": ("icechart.pipeline.score", "score_paths"),
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'icechart' has no attribute {name!r}")
