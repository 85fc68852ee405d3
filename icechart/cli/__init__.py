"""The ``icechart`` command line: thin Click commands over the library."""
