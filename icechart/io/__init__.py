"""Reading AI4Arctic scenes: the input contract, the reader and the geolocation."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from icechart.io.scene import Scene, open_scene

__all__ = ["Scene", "open_scene"]


def __getattr__(name: str) -> object:
    # Lazy (PEP 562): importing icechart.io.contract must not import xarray.
    if name in __all__:
        from icechart.io import scene

        return getattr(scene, name)
    raise AttributeError(f"module 'icechart.io' has no attribute {name!r}")
