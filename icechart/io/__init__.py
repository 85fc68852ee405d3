"""Reading AI4Arctic scenes: the input contract, the reader and the geolocation.

``Scene`` and ``open_scene`` (:mod:`icechart.io.scene`) load on first use, so importing
``icechart.io.contract`` (the CLI at start-up) does not import xarray.
"""

from typing import Any

__all__ = ["Scene", "open_scene"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from icechart.io import scene

        return getattr(scene, name)
    raise AttributeError(f"module 'icechart.io' has no attribute {name!r}")
