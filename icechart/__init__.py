"""icechart: operational sea-ice charts from AI4Arctic Sentinel-1 scenes (MMSeaIce U-Net).

Library API (a notebook user needs no CLI)::

    import icechart
    scene = icechart.open_scene("20180707T113313_cis_prep.nc")
"""

from icechart._version import __version__
from icechart.io.scene import Scene, open_scene

__all__ = ["__version__", "Scene", "open_scene"]
