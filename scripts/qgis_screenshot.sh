#!/usr/bin/env bash
# Render a scene's products in QGIS with their own styles, headless:
#
#   scripts/qgis_screenshot.sh PRODUCT_DIR [OUT.png]
#
# PRODUCT_DIR holds one scene's products of `icechart predict` (the GeoTIFFs with their .qml,
# the SIGRID-3 shapefile with its .qml, optionally the GeoPackage). Needs QGIS's Python bindings
# for the system python (Debian/Ubuntu: apt-get install python3-qgis qgis-providers xvfb); runs
# under xvfb-run when it is there, else on Qt's offscreen platform. Prints each layer's renderer
# and legend entries, writes OUT.png (default PRODUCT_DIR/qgis_screenshot.png); exit 1 when a
# layer does not load or its style is not picked up.
set -euo pipefail
dir=${1:?usage: $0 PRODUCT_DIR [OUT.png]}
out=${2:-$dir/qgis_screenshot.png}
here=$(cd "$(dirname "$0")" && pwd)
py=${QGIS_PYTHON:-/usr/bin/python3}
if ! "$py" -c 'import qgis.core' 2>/dev/null; then
    echo "$0: $py has no QGIS bindings; install python3-qgis (apt-get install python3-qgis qgis-providers xvfb)" >&2
    exit 69
fi
if command -v xvfb-run >/dev/null; then
    exec xvfb-run -a -s "-screen 0 1920x1080x24" "$py" "$here/qgis_render.py" "$dir" "$out"
fi
QT_QPA_PLATFORM=offscreen exec "$py" "$here/qgis_render.py" "$dir" "$out"
