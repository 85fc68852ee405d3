# The signal handlers go in before click, numpy, xarray or torch are imported: a SIGINT, SIGTERM
# or SIGHUP during a slow import then ends the run with 130/143/129 (icechart.ops.signals).
from icechart.cli import main

main()
