"""Reading AI4Arctic scenes: the input contract, the reader and the geolocation."""

from icechart.io.scene import Scene, open_scene

__all__ = ["Scene", "open_scene"]
