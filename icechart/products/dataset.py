"""The in-memory product: one scene's charts as an :class:`xarray.Dataset` (``icechart.predict``).

The same variables, attributes and global attributes as the netCDF
(:mod:`icechart.products.netcdf`), from the same functions, so the two cannot disagree (e.g.
on whether the confidence is calibrated). Holds the full-resolution charts in memory: for
notebooks, not for batches.
"""

from __future__ import annotations

import logging
from datetime import timezone
from typing import TYPE_CHECKING

import numpy as np

from icechart.classes import FILL
from icechart.io import contract as C

if TYPE_CHECKING:
    import xarray as xr

    from icechart.infer.predict import Prediction
    from icechart.io.scene import Scene

logger = logging.getLogger(__name__)


def prediction_dataset(prediction: "Prediction", scene: "Scene", *, command: str = "icechart.predict()") -> "xr.Dataset":
    """The charts of ``prediction`` at SAR geometry.

    Returns
    -------
    xarray.Dataset
        ``SIC`` (percent), ``SOD``, ``FLOE`` (uint8 classes, 255 masked), ``SOD_confidence``,
        ``FLOE_confidence`` (percent, calibrated when the model is), ``status_flag``,
        ``SIC_standard_error`` (percent; ensembles only), and ``lat``/``lon`` coordinates, on
        dims ``sar_lines`` x ``sar_samples``, with the netCDF product's attributes.
    """
    import xarray as xr

    from icechart.products import product_attrs
    from icechart.products.netcdf import CHART_VARIABLES, SE_VARIABLE, LatLonBlocks, chart_arrays, variable_attrs

    lines, samples = scene.shape
    has_se = prediction.sic_se is not None
    names = CHART_VARIABLES + ((SE_VARIABLE,) if has_se else ())
    arrays = {n: np.empty((lines, samples), np.uint8) for n in names}
    lat = np.empty((lines, samples), np.float32)
    lon = np.empty((lines, samples), np.float32)
    geo = LatLonBlocks(scene)
    for b in prediction.blocks(scene):
        block = chart_arrays(b.charts, b.confidence, b.status, b.sic_se)
        for n in names:
            arrays[n][b.rows] = block[n]
        lat[b.rows], lon[b.rows] = geo.block(b.rows)
    dims = C.SAR_DIMS
    attrs = variable_attrs(sic_standard_error=has_se, temperature=prediction.temperature)
    data_vars = {}
    for n, a in arrays.items():
        va = {k: v for k, v in attrs[n].items() if k not in ("_FillValue", "coordinates")}
        enc = {} if n == "status_flag" else {"_FillValue": FILL}
        data_vars[n] = xr.Variable(dims, a, va, encoding=enc)
    gattrs = product_attrs(prediction, scene, model_id=prediction.model_id, input_sha256=None, command=command)
    gattrs.update(geo.footprint())
    t = np.datetime64(prediction.time.astimezone(timezone.utc).replace(tzinfo=None), "ns")
    tattrs = {k: v for k, v in attrs["time"].items() if k not in ("units", "calendar")}
    ds = xr.Dataset(
        data_vars,
        coords={"lat": (dims, lat, attrs["lat"]), "lon": (dims, lon, attrs["lon"]), "time": ((), t, tattrs)},
        attrs=gattrs,
    )
    ds["time"].encoding.update(units=attrs["time"]["units"], calendar=attrs["time"]["calendar"])
    return ds
