"""Open a scene's products in QGIS (PyQGIS, headless) with their own styles and render them.

    python3 scripts/qgis_render.py PRODUCT_DIR OUT.png      # the system python with python3-qgis

Loads every chart GeoTIFF (``*_{SIC,SOD,FLOE}.tif``) and the SIGRID-3 shapefile of PRODUCT_DIR
the way QGIS opens a file: with the default style beside it (``.qml``), and the GeoPackage's
layers with the style stored in it, when there is one. It prints, per layer, the renderer QGIS
chose and its legend entries (so a missing or broken style shows), and exports a print layout
of the four maps, each with its QGIS legend, to OUT.png. Exit 1 when a layer does not load or
keeps QGIS's default renderer (its style was not picked up).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsLayoutExporter,
    QgsLayoutItemLabel,
    QgsLayoutItemLegend,
    QgsLayoutItemMap,
    QgsLayoutPoint,
    QgsLayoutSize,
    QgsPrintLayout,
    QgsProject,
    QgsRasterLayer,
    QgsUnitTypes,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QFont  # noqa: E402


def _legend(layer) -> list[str]:  # type: ignore[no-untyped-def]
    r = layer.renderer()
    if isinstance(layer, QgsRasterLayer):
        return [label for label, _ in r.legendSymbologyItems()]
    return [item.label() for item in r.legendSymbolItems()]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, out = Path(argv[1]), Path(argv[2])
    app = QgsApplication([], False)
    app.initQgis()
    project = QgsProject.instance()
    layers = []
    failed = False
    for chart in ("SIC", "SOD", "FLOE"):
        (tif,) = sorted(src.glob(f"*_{chart}.tif"))
        lyr = QgsRasterLayer(str(tif), chart)
        layers.append(lyr)
    (shp,) = sorted(src.glob("*_sigrid3.shp"))
    layers.append(QgsVectorLayer(str(shp), "SIGRID-3 CT", "ogr"))
    gpkgs = sorted(src.glob("*_sigrid3.gpkg"))
    if gpkgs:
        layers.append(QgsVectorLayer(f"{gpkgs[0]}|layername=sigrid3_epsg4326", "SIGRID-3 EPSG:4326", "ogr"))
    for lyr in layers:
        if not lyr.isValid():
            print(f"{lyr.name()}: does not load", file=sys.stderr)
            failed = True
            continue
        rtype = lyr.renderer().type()
        legend = _legend(lyr)
        print(f"{lyr.name()} ({lyr.source()}): renderer {rtype}, crs {lyr.crs().authid()}, {len(legend)} legend entries: {legend}")
        if rtype not in ("paletted", "RuleRenderer"):
            print(f"{lyr.name()}: the style beside it was not loaded", file=sys.stderr)
            failed = True
        project.addMapLayer(lyr, False)
    shown = [lyr for lyr in layers if lyr.isValid()]
    layout = QgsPrintLayout(project)
    layout.initializeDefaults()
    page = layout.pageCollection().page(0)
    rows = (len(shown) + 2) // 3
    page.setPageSize(QgsLayoutSize(600, 16 + 140 * rows, QgsUnitTypes.LayoutMillimeters))
    title = QgsLayoutItemLabel(layout)
    from qgis.core import Qgis

    title.setText(f"icechart products opened in QGIS {Qgis.QGIS_VERSION} with their own styles: {shp.name[: -len('_sigrid3.shp')]}")
    title.setFont(QFont("Sans", 14))
    title.attemptMove(QgsLayoutPoint(8, 4, QgsUnitTypes.LayoutMillimeters))
    title.attemptResize(QgsLayoutSize(400, 10, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(title)
    w, h = 130.0, 130.0
    for k, lyr in enumerate(shown):
        col, row = k % 3, k // 3
        x0, y0 = 8 + col * 198, 16 + row * 140
        m = QgsLayoutItemMap(layout)
        m.attemptMove(QgsLayoutPoint(x0, y0, QgsUnitTypes.LayoutMillimeters))
        m.attemptResize(QgsLayoutSize(w, h, QgsUnitTypes.LayoutMillimeters))
        m.setLayers([lyr])
        m.setCrs(lyr.crs())
        m.setExtent(lyr.extent())
        m.setFrameEnabled(True)
        layout.addLayoutItem(m)
        leg = QgsLayoutItemLegend(layout)
        leg.setTitle(lyr.name())
        leg.setAutoUpdateModel(False)
        leg.model().rootGroup().clear()
        leg.model().rootGroup().addLayer(lyr)
        leg.setLinkedMap(m)
        leg.attemptMove(QgsLayoutPoint(x0 + w + 3, y0, QgsUnitTypes.LayoutMillimeters))
        layout.addLayoutItem(leg)
    exporter = QgsLayoutExporter(layout)
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = 110
    res = exporter.exportToImage(str(out), settings)
    if res != QgsLayoutExporter.Success:
        print(f"export failed ({res})", file=sys.stderr)
        failed = True
    else:
        print(f"wrote {out}")
    app.exitQgis()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
