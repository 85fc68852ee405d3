#!/usr/bin/env bash
# `make demo`: generate a synthetic AI4Arctic scene and chart it with the shipped model.
set -euo pipefail
out=${1:-demo-out}
bin=.venv/bin
mkdir -p "$out"
echo "== 1/2 generating a synthetic AI4Arctic scene (1003 x 997 pixels) in $out/scenes"
"$bin/icechart" -q synth "$out/scenes" --scenes 1 --size 1003x997 --seed 2024 --overwrite
scene=$(ls "$out"/scenes/*_prep.nc | head -n 1)
if ! "$bin/icechart" predict --help >/dev/null 2>&1; then
  echo "== 2/2 reading the scene (no prediction command yet in this version)"
  "$bin/python" -c "import icechart,sys; s=icechart.open_scene(sys.argv[1]); print(s.scene_id, s.shape, 'labels:', s.has_labels)" "$scene"
  exit 0
fi
echo "== 2/2 icechart predict $scene -o $out/charts (shipped model)"
"$bin/icechart" predict "$scene" -o "$out/charts" --overwrite
echo
echo "Products in $out/charts:"
ls -1 "$out/charts" | sed 's/^/  /'
cat <<TXT

How to open them:
  netCDF (CF, SAR geometry):  ncdump -h $out/charts/*.nc   or   python -c "import xarray; print(xarray.open_dataset('$(ls "$out"/charts/*.nc | grep -v autoice | head -n1)'))"
  GeoTIFF (EPSG:3413, WMO colours): open in QGIS, or  gdalinfo $out/charts/*_SIC.tif
  SIGRID-3 shapefile: open *_sigrid3.shp in QGIS (fields CT CA SA FA ... POLY_TYPE)
  Quicklooks: $out/charts/*_SIC.png, *_SOD.png, *_FLOE.png
  Score against the scene's own labels:  $bin/icechart score --labels $out/scenes $out/charts
TXT
