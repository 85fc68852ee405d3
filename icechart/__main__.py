from icechart.cli.main import main

main()
