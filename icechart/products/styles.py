"""Styles and category names that GIS clients read beside the products.

* QGIS layer styles (``.qml``, loaded by QGIS as the layer's default style when they share the
  data file's base name): a paletted renderer for each chart GeoTIFF (WMO colours, class names,
  land, no data transparent), a grey ramp for the uncertainty GeoTIFFs, and a rule-based
  renderer for the SIGRID-3 polygons coloured by total concentration (the WMO colour code for
  CT, WMO/TD-No. 1215) with land and no-data polygons apart.
* GDAL's Persistent Auxiliary Metadata (``.tif.aux.xml``) with the band's category names and a
  thematic raster attribute table (value, class name, colour): GeoTIFF has no place for either
  inside the file, so GDAL, QGIS (3.30+ attribute tables) and ArcGIS read them from there.

Colours and names come from :mod:`icechart.classes` (one source of truth).
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from icechart.classes import CLASS_NAMES, COLOURS, SIC_COLOURS

LAND_VALUE = 254
"""GeoTIFF value of land pixels (255 is no data: invalid SAR, outside the swath, off the scene)."""
LAND_RGB = (196, 170, 130)
NODATA_LABEL = "no data (invalid SAR or outside the scene)"
QGIS_VERSION = "3.22.0"

_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def stored_value(chart: str, cls: int) -> int:
    """The value a class is stored as (SIC in percent)."""
    return 10 * cls if chart == "SIC" else cls


def class_label(chart: str, cls: int) -> str:
    """Legend label of a class: ``"30 %"`` (``"0 % (ice free)"``), ``"thin first year ice"``."""
    if chart == "SIC":
        return "0 % (ice free)" if cls == 0 else f"{10 * cls} %"
    return CLASS_NAMES[chart][cls].replace("_", " ")


def categories(chart: str) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """``{stored value: (label, rgb)}`` of a chart GeoTIFF, land included, no data not."""
    out = {stored_value(chart, k): (class_label(chart, k), rgb) for k, rgb in COLOURS[chart].items()}
    out[LAND_VALUE] = ("land", LAND_RGB)
    return out


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def raster_qml(chart: str) -> str:
    """A QGIS paletted-renderer style for a chart GeoTIFF."""
    entries = "\n".join(
        f"        <paletteEntry value=\"{v}\" color=\"{_hex(rgb)}\" alpha=\"255\" label={quoteattr(label)}/>"
        for v, (label, rgb) in sorted(categories(chart).items())
    )
    return (
        _DOCTYPE
        + f'<qgis version="{QGIS_VERSION}" styleCategories="Symbology">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <colorPalette>\n"
        f"{entries}\n"
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <huesaturation saturation="0" colorizeOn="0" grayscaleMode="0" colorizeStrength="100"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n"
    )


def layer_qml(name: str) -> str:
    """A QGIS style for an uncertainty GeoTIFF: grey ramp 0..100 %, land tan."""
    return (
        _DOCTYPE
        + f'<qgis version="{QGIS_VERSION}" styleCategories="Symbology">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1" '
        'classificationMin="0" classificationMax="100" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        '      <rastershader>\n'
        '        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="1" '
        'minimumValue="0" maximumValue="100">\n'
        f'          <item value="0" color="#000000" alpha="255" label={quoteattr("0 % (" + name + ")")}/>\n'
        '          <item value="100" color="#ffffff" alpha="255" label="100 %"/>\n'
        f'          <item value="{LAND_VALUE}" color="{_hex(LAND_RGB)}" alpha="255" label="land"/>\n'
        "        </colorrampshader>\n"
        "      </rastershader>\n"
        "    </rasterrenderer>\n"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n"
    )


def pam_xml(chart: str) -> str:
    """GDAL PAM (``.aux.xml``) of a chart GeoTIFF: category names and a thematic attribute table."""
    cats = categories(chart)
    names = [""] * (max(cats) + 1)
    for v, (label, _) in cats.items():
        names[v] = label
    cat_xml = "\n".join(f"      <Category>{_esc(n)}</Category>" for n in names)
    rows = "\n".join(
        f'      <Row index="{i}"><F>{v}</F><F>{_esc(label)}</F><F>{rgb[0]}</F><F>{rgb[1]}</F><F>{rgb[2]}</F></Row>'
        for i, (v, (label, rgb)) in enumerate(sorted(cats.items()))
    )
    # Field types: 0 integer, 2 string; usages: 5 MinMax (the value), 2 Name, 6/7/8 Red/Green/Blue.
    fields = (("Value", 0, 5), ("Class_Name", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8))
    defs = "\n".join(
        f'      <FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>'
        for i, (n, t, u) in enumerate(fields)
    )
    return (
        "<PAMDataset>\n"
        '  <PAMRasterBand band="1">\n'
        "    <CategoryNames>\n"
        f"{cat_xml}\n"
        "    </CategoryNames>\n"
        '    <GDALRasterAttributeTable tableType="thematic">\n'
        f"{defs}\n"
        f"{rows}\n"
        "    </GDALRasterAttributeTable>\n"
        "  </PAMRasterBand>\n"
        "</PAMDataset>\n"
    )


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fill_symbol(name: str, rgb: tuple[int, int, int], alpha: int = 255) -> str:
    color = f"{rgb[0]},{rgb[1]},{rgb[2]},{alpha}"
    props = {
        "color": color,
        "outline_color": "60,60,60,255",
        "outline_style": "solid",
        "outline_width": "0.15",
        "outline_width_unit": "MM",
        "style": "solid",
        "joinstyle": "bevel",
    }
    opts = "\n".join(f'            <Option type="QString" name="{k}" value="{v}"/>' for k, v in props.items())
    legacy = "\n".join(f'          <prop k="{k}" v="{v}"/>' for k, v in props.items())
    return (
        f'      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
        '          <Option type="Map">\n'
        f"{opts}\n"
        "          </Option>\n"
        f"{legacy}\n"
        "        </layer>\n"
        "      </symbol>"
    )


def vector_rules() -> list[tuple[str, str, tuple[int, int, int], int]]:
    """(label, QGIS filter expression, rgb, alpha) of the SIGRID-3 polygon style, in order."""
    from icechart.classes import TO_CODE

    rules: list[tuple[str, str, tuple[int, int, int], int]] = [
        ("land", "\"POLY_TYPE\" = 'L'", LAND_RGB, 255),
        (NODATA_LABEL, "\"POLY_TYPE\" = 'N'", (255, 255, 255), 0),
        ("ice free (W)", "\"POLY_TYPE\" = 'W'", SIC_COLOURS[0], 255),
    ]
    for k in range(1, 11):
        code = f"{TO_CODE['SIC'][k]:02d}"
        label = "CT 10/10" if k == 10 else f"CT {k}/10"
        rules.append((label, f"\"POLY_TYPE\" = 'I' AND \"CT\" = '{code}'", SIC_COLOURS[k], 255))
    return rules


def vector_qml() -> str:
    """A QGIS rule-based style for the SIGRID-3 shapefile (WMO total-concentration colours)."""
    rules = vector_rules()
    rule_xml = "\n".join(
        f'      <rule key="r{i}" symbol="{i}" label={quoteattr(label)} filter={quoteattr(expr)}/>'
        for i, (label, expr, _, _) in enumerate(rules)
    )
    symbols = "\n".join(_fill_symbol(str(i), rgb, alpha) for i, (_, _, rgb, alpha) in enumerate(rules))
    return (
        _DOCTYPE
        + f'<qgis version="{QGIS_VERSION}" styleCategories="Symbology">\n'
        '  <renderer-v2 type="RuleRenderer" symbollevels="0" enableorderby="0" forceraster="0">\n'
        '    <rules key="root">\n'
        f"{rule_xml}\n"
        "    </rules>\n"
        "    <symbols>\n"
        f"{symbols}\n"
        "    </symbols>\n"
        "  </renderer-v2>\n"
        "  <blendMode>0</blendMode>\n"
        "  <featureBlendMode>0</featureBlendMode>\n"
        "</qgis>\n"
    )


def write_raster_qml(path: Path, chart: str) -> None:
    Path(path).write_text(raster_qml(chart), encoding="utf-8")


def write_layer_qml(path: Path, name: str) -> None:
    Path(path).write_text(layer_qml(name), encoding="utf-8")


def write_pam(path: Path, chart: str) -> None:
    Path(path).write_text(pam_xml(chart), encoding="utf-8")


def write_vector_qml(path: Path) -> None:
    Path(path).write_text(vector_qml(), encoding="utf-8")


__all__ = ["LAND_VALUE", "categories", "pam_xml", "raster_qml", "vector_qml"]
